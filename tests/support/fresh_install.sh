#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Run inside a fresh Debian 12 or 13 that tests/package/test_deb.py builds with mmdebstrap from the host's own
# mirrors, with this tree in /root/crashhpd and the README's install command in /root/install-command:
# build and install crashhpd with that command, use it, write an admin's drop-in, purge it; last, that
# release's lintian on the package built there.
# Each step's output goes under /root/out for the test to read; nothing here decides pass or fail.
out=/root/out
mkdir -p "$out"
listing() {  # every path of the system, but the kernel's file systems and this script's own
    find / -xdev \( -path /root -o -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \) -prune \
        -o -print | sort
}
step() {  # step NAME COMMAND...: its stdout, stderr and exit status
    name=$1; shift
    "$@" > "$out/$name.out" 2> "$out/$name.err"
    echo $? > "$out/$name.rc"
}

cd /root/crashhpd
dpkg-query -W -f '${Package}\n' > "$out/packages-before"
listing > "$out/files-before"
# apt asks before it installs what the package depends on, and a newcomer answers yes
echo 'APT::Get::Assume-Yes "true";' > /etc/apt/apt.conf.d/90newcomer-says-yes
step install sh -c "$(cat /root/install-command)"
rm /etc/apt/apt.conf.d/90newcomer-says-yes
step enabled systemctl is-enabled crashhpd.service
step version crashhpd --version
step ctl-help crashhpctl --help
step generate crashhpd generate -o "$out/header"
step inspect crashhpd inspect --json "$out/header"
step owned dpkg -L crashhpd
step depends dpkg-query -W -f '${Depends}\n' crashhpd
step python /usr/lib/crashhpd/bin/python -I -c 'import json, os, sys, pydantic
print(json.dumps([sys.version, pydantic.VERSION, pydantic.__file__, os.path.realpath(pydantic.__file__)]))'
# the service as its unit runs it (no systemd in here: started by hand, on the embedded default), then asked
mkdir -p /run/crashhpd
/usr/bin/crashhpd run > "$out/daemon.out" 2> "$out/daemon.err" &
daemon=$!
for _ in $(seq 100); do [ -S /run/crashhpd/control.sock ] && break; sleep 0.1; done
step status crashhpctl status
step status-json crashhpctl status --json
kill -TERM "$daemon"; wait "$daemon"; echo $? > "$out/daemon.rc"
mkdir -p /etc/crashhpd/crashhpd.toml.d
printf '[debounce]\nquiet_ms = 500\n' > /etc/crashhpd/crashhpd.toml.d/50-admin.toml
step purge apt purge -y crashhpd
listing > "$out/files-after"
# after the listing: lintian is no part of what the install and the purge are checked against
step lintian-install apt-get install -y --no-install-recommends lintian
step lintian lintian --display-info --fail-on error,warning /root/crashhpd/crashhpd_*.deb
