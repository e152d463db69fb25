#!/usr/bin/env bash
# Shows that the two commands of README.md ("The two commands") pass on a
# machine that has only Go and Debian's base system: it builds a Debian 12
# chroot with debootstrap, puts Go and the repository in it, and runs there,
# as root in the repository:
#
#   1. `go run ./cmd/petrel serve` (the embedded default), waits until it
#      listens on 127.0.0.1:2525, sends it a first message in plain SMTP
#      with bash's /dev/tcp (no SMTP client is installed yet), checks that
#      it is in petrel-data/maildir/postmaster/new/, and stops it;
#   2. `scripts/test.sh`, which installs every test peer itself
#      (test/interop/install-deps.sh) and runs every check and test;
#   3. `go run ./cmd/petrel serve` again and README.md's first message,
#      `swaks --server 127.0.0.1:2525 --tls --to postmaster@localhost
#      --from me@example.org` (swaks is there now), and checks that the
#      message arrived under a Received header "with ESMTPS".
#
# Usage, as root on a Debian or Ubuntu host that reaches Debian's mirror
# and the Go module proxy:
#
#   scripts/fresh-machine.sh [--worktree] [--keep] [--dir DIR] [--mirror URL]
#
#   --worktree   test the working tree as it is, uncommitted and untracked
#                (not ignored) files included; default: the committed tree
#                (HEAD, as `git archive` makes it)
#   --keep       keep the chroot afterwards (look inside with
#                `chroot DIR /bin/bash`; mount /proc first); default: remove it
#   --dir DIR    where to build the chroot; it must not exist yet or be empty
#                (default /var/tmp/petrel-fresh-machine)
#   --mirror URL Debian mirror (default http://deb.debian.org/debian)
#
# It takes about 10-15 minutes on 2 cores (10 when it first passed here):
# debootstrap about a minute, `go run` a minute (module downloads, a cold build cache), the
# package installs a minute, scripts/test.sh the rest. Run it with its
# output in a file, e.g.
#   scripts/fresh-machine.sh --worktree >/var/tmp/fresh-machine.log 2>&1
# It exits 0 when all three steps pass.
#
# What the chroot starts with, and nothing else:
#   - `debootstrap --variant=minbase --include=ca-certificates bookworm`:
#     Debian's Essential and required packages and apt (less than a Debian
#     installed with the installer, which also has the "important" and
#     "standard" packages: no netbase, procps, iproute2, git, python3, perl
#     beyond perl-base). ca-certificates is added because Go needs CA roots
#     to download the modules from the proxy, and every real machine that
#     got Go over HTTPS has them (on Debian it is a "standard" package, in
#     every default install); Go does not bundle any.
#   - The CA certificates that this host trusts beyond Debian's bundle, if
#     any: on a network whose egress proxy intercepts TLS, that proxy's CA
#     (without it no module download gets through); none on an ordinary
#     network.
#   - apt sources for bookworm, bookworm-updates and bookworm-security, and
#     /etc/hosts with localhost, as the Debian installer writes them; the
#     host's /etc/resolv.conf.
#   - Go: a copy of the host's GOROOT at /usr/local/go, PATH as in Go's
#     install instructions, and the host's Go settings (GOPROXY, GOSUMDB,
#     GOFLAGS, GOTOOLCHAIN, GONOSUMDB, GONOPROXY, GOPRIVATE, GOINSECURE, as
#     `go env` prints them here); empty module and build caches.
#   - The repository at /root/petrel, without .git (git is not installed,
#     so scripts/test.sh lists the Go files with find).
#   - /proc, /sys, /dev and /dev/pts mounted; they are unmounted, and every
#     process still running in the chroot is ended, on exit.
# No /usr/sbin/policy-rc.d is written, as a real machine has none. There is
# no init system in the chroot either, and Debian's invoke-rc.d then starts
# nothing ("No init system and policy-rc.d missing! Defaulting to block"),
# so installing postfix and dovecot-core starts no daemon here; on a real
# machine they may start one, which install-deps.sh stops.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

dir=/var/tmp/petrel-fresh-machine
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security
worktree=0
keep=0
while [ $# -gt 0 ]; do
	case "$1" in
	--worktree) worktree=1 ;;
	--keep) keep=1 ;;
	--dir) dir=${2:?--dir needs a directory}; shift ;;
	--mirror) mirror=${2:?--mirror needs a URL}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "fresh-machine.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
	esac
	shift
done

say() { printf '\n== fresh-machine: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
die() { echo "fresh-machine.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mount)"
repo=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin"
command -v go >/dev/null || die "needs Go on the host (its GOROOT is copied into the chroot)"
command -v git >/dev/null || die "needs git on the host (to export the repository)"
goroot=$(go env GOROOT)

case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
dir=${dir%/}
case "$dir" in / | /var | /var/tmp | /tmp | /root | /home | /usr) die "--dir $dir: choose a directory of its own" ;; esac
if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
	die "$dir exists and is not empty: remove it (rm -rf --one-file-system $dir) or choose another --dir"
fi
for port in 2525 2587 2465; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "127.0.0.1:$port is taken on this machine; the chroot shares its network: stop what listens there"
	fi
done

# Cleanup: end what still runs inside the chroot, unmount, remove.
mounted=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$? pids=() p root i m
	set +e
	for p in /proc/[0-9]*; do
		root=$(readlink "$p/root" 2>/dev/null) || continue
		if [ "$root" = "$dir" ] || [[ "$root" == "$dir"/* ]]; then pids+=("${p#/proc/}"); fi
	done
	if [ ${#pids[@]} -gt 0 ]; then
		echo "fresh-machine: ending processes left in the chroot: ${pids[*]}"
		kill -TERM "${pids[@]}" 2>/dev/null
		for i in 1 2 3 4 5 6 7 8 9 10; do
			alive=0
			for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
			[ "$alive" -eq 0 ] && break
			sleep 0.5
		done
		kill -KILL "${pids[@]}" 2>/dev/null
		sleep 0.5
	fi
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		m=${mounted[i]}
		umount "$m" 2>/dev/null || umount -l "$m" || echo "fresh-machine: cannot unmount $m" >&2
	done
	if [ "$keep" -eq 1 ]; then
		echo "fresh-machine: kept the chroot in $dir"
	elif [ -d "$dir" ]; then
		if grep -q " ${dir}[/ ]" /proc/self/mounts; then
			echo "fresh-machine: something is still mounted under $dir: not removing it" >&2
		else
			rm -rf --one-file-system "$dir"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)

say "debootstrap --variant=minbase bookworm $dir $mirror"
if ! command -v debootstrap >/dev/null; then
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
fi
mkdir -p "$dir"
debootstrap --variant=minbase --include=ca-certificates bookworm "$dir" "$mirror"

say "the machine's configuration: apt sources, /etc/hosts, /etc/resolv.conf, CA certificates"
cat >"$dir/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
cat >"$dir/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$(hostname)
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
# The CA certificates this host trusts beyond Debian's bundle: on a network
# whose egress proxy intercepts TLS (as here), its CA, without which no
# HTTPS request, and so no module download, gets through. On an ordinary
# network there are none, and the chroot trusts exactly Debian's CAs.
pem_lines() { awk '/-----BEGIN CERTIFICATE-----/ { c = "" } { c = c $0 "|" } /-----END CERTIFICATE-----/ { print c }' "$1" | sort -u; }
host_bundle=/etc/ssl/certs/ca-certificates.crt
if [ -s "$host_bundle" ]; then
	n=0
	mkdir -p "$dir/usr/local/share/ca-certificates"
	while IFS= read -r pem; do
		n=$((n + 1))
		tr '|' '\n' <<<"$pem" >"$dir/usr/local/share/ca-certificates/host-$n.crt"
		echo "the host's CA $n: $(tr '|' '\n' <<<"$pem" | openssl x509 -noout -subject 2>/dev/null || echo '?')"
	done < <(comm -23 <(pem_lines "$host_bundle") <(pem_lines "$dir/etc/ssl/certs/ca-certificates.crt"))
	if [ "$n" -gt 0 ]; then
		chroot "$dir" /usr/sbin/update-ca-certificates
	fi
fi
if [ -e "$dir/usr/sbin/policy-rc.d" ]; then
	die "the chroot has a /usr/sbin/policy-rc.d, which a real machine has not"
fi

say "Go: $goroot ($(go version)) -> /usr/local/go"
mkdir -p "$dir/usr/local"
cp -a "$goroot" "$dir/usr/local/go"
goenv=()
for v in GOPROXY GOSUMDB GOFLAGS GOTOOLCHAIN GONOSUMDB GONOPROXY GOPRIVATE GOINSECURE; do
	val=$(go env "$v")
	[ -z "$val" ] || goenv+=("$v=$val")
done
echo "Go settings from this host: ${goenv[*]}"

mkdir -p "$dir/root/petrel"
if [ $worktree -eq 1 ]; then
	say "the repository: working tree of $repo (uncommitted files included) -> /root/petrel"
	git -C "$repo" ls-files -coz --exclude-standard |
		while IFS= read -r -d '' f; do
			if [ -e "$repo/$f" ] || [ -L "$repo/$f" ]; then printf '%s\0' "$f"; fi
		done |
		tar -C "$repo" --null -T - -cf - | tar -C "$dir/root/petrel" -xf -
else
	say "the repository: HEAD of $repo ($(git -C "$repo" log -1 --format='%h %s' | cut -c1-72)) -> /root/petrel"
	git -C "$repo" archive --format=tar HEAD | tar -C "$dir/root/petrel" -xf -
fi
echo "$(find "$dir/root/petrel" -type f | wc -l) files"

for m in proc sys dev dev/pts; do
	mkdir -p "$dir/$m"
	case $m in
	proc) mount -t proc proc "$dir/proc" ;;
	sys) mount -t sysfs sysfs "$dir/sys" ;;
	*) mount --bind "/$m" "$dir/$m" ;;
	esac
	mounted+=("$dir/$m")
done

# The steps run inside, as root in the repository.
cat >"$dir/root/fresh-machine-steps.sh" <<'STEPS'
#!/bin/bash
set -euo pipefail
cd /root/petrel

serve_pid=
serve() {
	# setsid: go run and the petrel binary it starts get a process group of
	# their own, stopped as one.
	setsid go run ./cmd/petrel serve >"/root/serve-$1.log" 2>&1 &
	serve_pid=$!
	local i
	for ((i = 0; i < 1200; i++)); do
		if (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null; then
			echo "petrel serve listens on 127.0.0.1:2525 after $((i / 2))s:"
			sed 's/^/  | /' "/root/serve-$1.log"
			return 0
		fi
		if ! kill -0 "$serve_pid" 2>/dev/null; then
			echo "petrel serve exited before listening:"; sed 's/^/  | /' "/root/serve-$1.log"; return 1
		fi
		sleep 0.5
	done
	echo "petrel serve did not listen on 127.0.0.1:2525 within 600s:"; sed 's/^/  | /' "/root/serve-$1.log"
	return 1
}
stop() {
	local i
	kill -TERM -- "-$serve_pid" 2>/dev/null || true
	for ((i = 0; i < 30; i++)); do
		kill -0 -- "-$serve_pid" 2>/dev/null || break
		sleep 0.5
	done
	kill -KILL -- "-$serve_pid" 2>/dev/null || true
	wait "$serve_pid" 2>/dev/null || true
	echo "petrel serve stopped; its output after the start:"
	sed 's/^/  | /' "/root/serve-$1.log" | tail -n 5
}
# A plain SMTP session over bash's /dev/tcp: send writes a command,
# expect reads one (possibly multiline) reply and checks its code.
send() { echo "C: $1"; printf '%s\r\n' "$1" >&3; }
expect() {
	local line
	while IFS= read -r -t 30 line <&3; do
		line=${line%$'\r'}
		echo "S: $line"
		case "$line" in
		"$1 "* | "$1") return 0 ;;
		"$1-"*) ;;
		*) echo "want a $1 reply"; return 1 ;;
		esac
	done
	echo "no $1 reply within 30s"
	return 1
}
count() { find petrel-data/maildir/postmaster/new -type f 2>/dev/null | wc -l; }
wait_count() {
	local i
	for ((i = 0; i < 20; i++)); do
		[ "$(count)" -lt "$1" ] || return 0
		sleep 0.5
	done
}

echo "== step 1: go run ./cmd/petrel serve, first message in plain SMTP"
serve 1
exec 3<>/dev/tcp/127.0.0.1/2525
expect 220
send "EHLO fresh-machine.localhost"; expect 250
send "MAIL FROM:<me@example.org>"; expect 250
send "RCPT TO:<postmaster@localhost>"; expect 250
send "DATA"; expect 354
send "From: <me@example.org>"
send "To: <postmaster@localhost>"
send "Subject: fresh machine, step 1"
send ""
send "Sent with bash /dev/tcp before any package was installed."
send "."; expect 250
send "QUIT"; expect 221
exec 3>&-
wait_count 1
stop 1
if [ "$(count)" -ne 1 ]; then echo "step 1 FAILED: no message in petrel-data/maildir/postmaster/new/"; exit 1; fi
f=$(find petrel-data/maildir/postmaster/new -type f)
echo "delivered: $f"; sed 's/^/  | /' "$f"
grep -q '^Subject: fresh machine, step 1' "$f" || { echo "step 1 FAILED: not the message sent"; exit 1; }
echo "step 1 passed"

echo
echo "== step 2: scripts/test.sh"
t0=$(date +%s)
if scripts/test.sh; then
	echo "step 2 passed: scripts/test.sh exited 0 after $(( ($(date +%s) - t0) / 60 )) min"
else
	rc=$?
	echo "step 2 FAILED: scripts/test.sh exited $rc after $(( ($(date +%s) - t0) / 60 )) min"
	exit 1
fi

echo
echo "== step 3: README's first message with swaks --tls"
serve 3
swaks --server 127.0.0.1:2525 --tls --to postmaster@localhost --from me@example.org
wait_count 2
stop 3
if [ "$(count)" -ne 2 ]; then echo "step 3 FAILED: no second message in petrel-data/maildir/postmaster/new/"; exit 1; fi
f=$(grep -L '^Subject: fresh machine, step 1' petrel-data/maildir/postmaster/new/*)
echo "delivered: $f"; sed -n '1,/^\r\{0,1\}$/p' "$f" | sed 's/^/  | /'
grep -q 'with ESMTPS' "$f" || { echo "step 3 FAILED: the Received header does not record TLS (with ESMTPS)"; exit 1; }
echo "step 3 passed"
STEPS
chmod +x "$dir/root/fresh-machine-steps.sh"

say "inside the chroot: steps 1-3"
# In the background, waited for: a signal to this script then ends it at
# once, and the EXIT trap ends what runs in the chroot.
rc=0
chroot "$dir" /usr/bin/env -i \
	HOME=/root TERM="${TERM:-dumb}" \
	PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	"${goenv[@]}" \
	/bin/bash /root/fresh-machine-steps.sh &
wait $! || rc=$?

mins=$(( ($(date +%s) - start) / 60 ))
if [ $rc -eq 0 ]; then
	say "PASS: both README commands on a fresh Debian 12 (minbase) with Go, in $mins min"
else
	say "FAIL (exit $rc) after $mins min"
fi
exit $rc
