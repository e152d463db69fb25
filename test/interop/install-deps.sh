#!/usr/bin/env bash
# Installs what scripts/test.sh needs beyond Go: the peers that Petrel's
# interoperability tests drive (test/interop, internal/postfixtest,
# internal/dovecottest and the tests that use them), and a C compiler for
# go test -race; then checks that each can do what the tests ask of it, TLS
# above all:
#
#   swaks                      STARTTLS, implicit TLS, AUTH PLAIN/LOGIN; its
#                              TLS needs Perl's Net::SSLeay (libnet-ssleay-perl;
#                              libio-socket-ssl-perl for newer swaks), which
#                              swaks only recommends
#   python3                    smtplib with the ssl module
#   openssl                    openssl s_client -starttls smtp
#   curl                       smtp:// with --ssl-reqd (Debian's: OpenSSL)
#   msmtp                      STARTTLS (Debian's: GnuTLS)
#   postfix                    a throw-away sending/receiving MTA with TLS
#                              and regexp: tables
#   dovecot-core, dovecot-lmtpd  Dovecot's LMTP server and its quota plugin
#   ca-certificates            CA roots, for `go install` of staticcheck from
#                              the module proxy (postfix and msmtp recommend it)
#   gcc, libc6-dev             not a peer: the C compiler and C library that
#                              cgo, and so `go test -race`, needs (without a C
#                              compiler Go sets CGO_ENABLED=0 and -race fails)
#
# Debian/Ubuntu, as root. Every package is named: they are installed with
# --no-install-recommends, so a peer's TLS support is never left to a
# Recommends. Idempotent: it installs only the packages that dpkg does not
# list as installed, runs apt-get update once and only if one is missing,
# then asks each peer what it can do and fails with one line per missing
# capability, naming the package that brings it. It leaves no system Postfix
# or Dovecot running (the tests start their own throw-away instances; the
# Postfix package is preseeded as "No configuration").
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: must run as root (apt-get install)" >&2
	exit 1
fi

# Postfix and Dovecot live in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

packages=(
	swaks libnet-ssleay-perl libio-socket-ssl-perl
	python3
	openssl
	curl
	msmtp
	postfix
	dovecot-core dovecot-lmtpd
	ca-certificates
	gcc libc6-dev
)

installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps.sh: needs Debian or Ubuntu (dpkg and apt-get); install by hand: ${packages[*]}" >&2
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
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
	echo "install-deps.sh: all interop peers are installed"
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

# Capabilities: ask each peer, as the tests will find it (PATH first, like
# exec.LookPath), whether it can do what the tests need. Outputs are caught
# whole before grep reads them, so that grep -q closing a pipe early cannot
# fail a check under pipefail.
failed=0
lack() {
	echo "install-deps.sh: $*" >&2
	failed=1
}
run() { "$@" 2>&1 || true; }
# missing CMD PKG: true (and a line) when CMD is not installed.
missing() {
	command -v "$1" >/dev/null 2>&1 && return 1
	lack "$1 is missing: install $2"
}

if ! missing swaks swaks; then
	support=$(run swaks --support)
	if ! grep -q '^=== TLS supported' <<<"$support"; then
		lack "swaks cannot do TLS (swaks --support: $(grep -m1 'TLS' <<<"$support" || echo 'no TLS line')): install libnet-ssleay-perl and libio-socket-ssl-perl"
	fi
fi

if ! missing python3 python3 && ! python3 -c 'import ssl, smtplib' >/dev/null 2>&1; then
	lack "$(command -v python3) cannot import ssl and smtplib (python3 -c 'import ssl, smtplib'): install python3 (Debian's /usr/bin/python3) and put it first in PATH"
fi

if ! missing openssl openssl && ! grep -q -- '-starttls' <<<"$(run openssl s_client -help)"; then
	lack "openssl s_client cannot do -starttls smtp (openssl s_client -help): install openssl"
fi

if ! missing curl curl; then
	curlv=$(run curl -V)
	protocols=" $(sed -n 's/^Protocols: //p' <<<"$curlv") "
	features=" $(sed -n 's/^Features: //p' <<<"$curlv") "
	if [[ "$protocols" != *" smtp "* || "$protocols" != *" smtps "* ]]; then
		lack "curl cannot do smtp and smtps (curl -V: Protocols:${protocols% }): install curl (Debian's)"
	elif [[ "$features" != *" SSL "* ]]; then
		lack "curl cannot do TLS (curl -V: no SSL in Features): install curl (Debian's, built with OpenSSL)"
	fi
fi

if ! missing msmtp msmtp; then
	version=$(run msmtp --version)
	if ! grep -Eqi '^TLS/SSL library: *(GnuTLS|OpenSSL|LibreSSL|libtls)' <<<"$version"; then
		lack "msmtp cannot do TLS (msmtp --version: $(grep -m1 '^TLS/SSL library' <<<"$version" || echo 'no TLS/SSL library line')): install msmtp (Debian's, built with GnuTLS)"
	fi
fi

if ! command -v postfix >/dev/null 2>&1 || ! command -v postconf >/dev/null 2>&1; then
	lack "postfix is missing: install postfix"
elif ! id postfix >/dev/null 2>&1; then
	lack "there is no postfix user: install postfix (dpkg --configure -a if it was interrupted)"
else
	# "No configuration" leaves no main.cf, without which postconf stops:
	# ask with an empty one.
	pfconf=$(mktemp -d)
	: >"$pfconf/main.cf"
	tlsversion=$(run postconf -c "$pfconf" -T run-version)
	if ! grep -q '^OpenSSL' <<<"$tlsversion"; then
		lack "postfix cannot do TLS (postconf -T run-version: $(head -n1 <<<"$tlsversion")): install postfix (Debian's, built with OpenSSL)"
	fi
	if ! grep -qx regexp <<<"$(run postconf -c "$pfconf" -m)"; then
		lack "postfix has no regexp: tables (postconf -m): install postfix (Debian's)"
	fi
	rm -rf "$pfconf"
fi

if ! missing dovecot dovecot-core; then
	dversion=$(run dovecot --version)
	if ! grep -q '^2\.' <<<"$dversion"; then
		lack "dovecot does not run (dovecot --version: $(head -n1 <<<"$dversion")): install dovecot-core"
	fi
	if [ ! -x /usr/lib/dovecot/lmtp ]; then
		lack "Dovecot has no LMTP server (/usr/lib/dovecot/lmtp): install dovecot-lmtpd"
	fi
	if [ ! -e /usr/lib/dovecot/modules/lib10_quota_plugin.so ]; then
		lack "Dovecot has no quota plugin (/usr/lib/dovecot/modules/lib10_quota_plugin.so): install dovecot-core"
	fi
	for u in dovecot dovenull; do
		if ! id "$u" >/dev/null 2>&1; then
			lack "there is no $u user: install dovecot-core (dpkg --configure -a if it was interrupted)"
		fi
	done
fi

if ! command -v gcc >/dev/null 2>&1; then
	lack "there is no C compiler, which go test -race needs (cgo): install gcc and libc6-dev"
else
	cc=$(mktemp -d)
	if ! printf 'int main(void) { return 0; }\n' | gcc -x c -o "$cc/a.out" - >/dev/null 2>&1; then
		lack "gcc cannot build a C program, which go test -race needs (cgo): install gcc and libc6-dev"
	fi
	rm -rf "$cc"
fi

if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then
	lack "no CA roots (/etc/ssl/certs/ca-certificates.crt), which go install needs to reach the module proxy: install ca-certificates"
fi

if [ "$failed" -ne 0 ]; then
	echo "install-deps.sh: the peers above cannot do what the tests need" >&2
	exit 1
fi
echo "install-deps.sh: every peer can do TLS (swaks, python3 ssl+smtplib, openssl s_client, curl smtp(s), msmtp, postfix, dovecot lmtp), and gcc builds for cgo"
