#!/usr/bin/env bash
# Installs the SMTP clients that Petrel's interoperability tests
# (test/interop) drive: swaks, msmtp, openssl, curl, python3, Postfix
# as a sending MTA, and Dovecot's LMTP server (dovecot-core and
# dovecot-lmtpd) as a delivery target for LMTP. Debian/Ubuntu, as root.
# Idempotent: it installs only what is missing, runs apt-get update once
# and only if something is missing, and leaves no system Postfix or Dovecot
# running (the tests start their own throw-away instances; the Postfix
# package is preseeded as "No configuration").
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: must run as root (apt-get install)" >&2
	exit 1
fi

# command name -> Debian package
declare -A pkg_of=(
	[swaks]=swaks
	[msmtp]=msmtp
	[openssl]=openssl
	[curl]=curl
	[python3]=python3
	[postfix]=postfix
	[dovecot]=dovecot-core
	[/usr/lib/dovecot/lmtp]=dovecot-lmtpd
)

# Postfix and Dovecot live in /usr/sbin, which a non-login PATH may lack.
# Dovecot's LMTP server is no command but a binary of dovecot-lmtpd.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
for cmd in swaks msmtp openssl curl python3 postfix dovecot /usr/lib/dovecot/lmtp; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		missing+=("${pkg_of[$cmd]}")
	fi
done

if [ "${#missing[@]}" -gt 0 ]; then
	echo "install-deps.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
		# No system MTA: no main.cf, nothing listening on port 25.
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		echo "postfix postfix/mailname string localhost" | debconf-set-selections
	fi
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
else
	echo "install-deps.sh: all interop clients are installed"
fi

# Make sure no system Postfix runs (installing it may have started one, or
# one may have been configured before): the tests' instance is separate.
if command -v postfix >/dev/null 2>&1; then
	if postfix status >/dev/null 2>&1; then
		echo "install-deps.sh: stopping the system Postfix"
		postfix stop >/dev/null 2>&1 || true
	fi
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet postfix 2>/dev/null; then
		systemctl stop postfix || true
	fi
	if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet postfix 2>/dev/null; then
		systemctl disable postfix >/dev/null 2>&1 || true
	fi
fi

# Likewise Dovecot: installing dovecot-core may have started a system
# instance (imap/pop3 only if their packages are installed; lmtp on its unix
# socket). The tests' instances have their own base_dir and do not need it.
if command -v dovecot >/dev/null 2>&1; then
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet dovecot 2>/dev/null; then
		echo "install-deps.sh: stopping the system Dovecot"
		systemctl stop dovecot || true
	elif [ -e /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
		echo "install-deps.sh: stopping the system Dovecot"
		dovecot stop >/dev/null 2>&1 || true
	fi
	if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet dovecot 2>/dev/null; then
		systemctl disable dovecot >/dev/null 2>&1 || true
	fi
fi
