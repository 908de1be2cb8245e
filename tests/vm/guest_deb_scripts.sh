#!/bin/bash
# Runs INSIDE the UML guest from the repository root:  bash tests/vm/guest_deb_scripts.sh W
# The package's maintainer scripts (scripts/deb/) with and without a running systemd: the guest's
# /run, /etc and /var are its own (tmpfs), so /run/systemd/system can be made and removed at will;
# systemctl and modprobe are stand-ins on PATH that record their arguments.  For each case NAME,
# OUT/NAME.rc, OUT/NAME.calls and OUT/NAME.err (see tests/vm/test_deb_scripts_vm.py).
source scripts/uml/guest-lib.sh     # (run from the repository root)
fake=$W/fakebin; mkdir -p "$fake"
for c in systemctl modprobe; do
    printf '#!/bin/sh\necho "%s $*" >> "$CALLS"\n[ "%s" != modprobe ] || exit ${MODPROBE_RC:-0}\n' \
        "$c" "$c" > "$fake/$c"
    chmod +x "$fake/$c"
done
export PATH=$fake:/usr/sbin:/usr/bin:/sbin:/bin
run() {     # run NAME SCRIPT ARGS...
    local name=$1 script=$2; shift 2
    export CALLS=$OUT/$name.calls; : > "$CALLS"
    sh "scripts/deb/$script" "$@" > /dev/null 2> "$OUT/$name.err"
    rec "$name.rc" $?
}
rm -rf /run/systemd
run nosd-install postinst configure ""
run nosd-remove prerm remove
run nosd-postrm postrm remove

mkdir -p /run/systemd/system
run install postinst configure ""
MODPROBE_RC=1 run install-nomod postinst configure ""
run upgrade postinst configure 0.1.0-1
run prerm-upgrade prerm upgrade 0.1.0-2
run prerm-remove prerm remove

# purge: the link enabling the package's unit goes, one to a unit of the administrator's stays
wants=/etc/systemd/system/multi-user.target.wants
other=/etc/systemd/system/other.target.wants
mkdir -p "$wants" "$other"
ln -sfn /lib/systemd/system/overlaybd-tcmu.service "$wants/overlaybd-tcmu.service"
ln -sfn /etc/systemd/system/my-overlaybd-tcmu.service "$other/overlaybd-tcmu.service"
run purge postrm purge
rec wants_left "$(ls "$wants" 2>/dev/null | grep -c overlaybd)"
rec other_left "$(readlink "$other/overlaybd-tcmu.service")"
