#!/bin/bash
# PID 1 of the UML guest (root = host / through hostfs, read-only).  Builds a writable root
# (tmpfs overlay over the host root), then runs stage2.sh inside it.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
trap 'sync; echo o > /proc/sysrq-trigger; halt -f 2>/dev/null; sleep 30' EXIT
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev 2>/dev/null
declare -A P
for x in $(cat /proc/cmdline); do
    case "$x" in obd.*=*) k=${x%%=*}; P[${k#obd.}]=${x#*=} ;; esac
done
RUN=${P[dir]}; MROOT=${P[mroot]}; KVER=$(uname -r)
mount -t hostfs -o "$RUN" hostfs "$RUN" || { echo "guest init: cannot mount $RUN" >&2; exit 1; }
mount -t tmpfs -o mode=755 tmpfs /run
modprobe -d "$MROOT" overlay 2>/dev/null
mkdir -p /run/o/u /run/o/w /run/o/r
if mount -t overlay -o lowerdir=/,upperdir=/run/o/u,workdir=/run/o/w overlay /run/o/r 2>/dev/null; then
    for m in /proc /sys /dev "$RUN"; do mount --rbind "$m" "/run/o/r$m"; done
    # modprobe inside the guest looks in /lib/modules/<uml kernel version>
    mkdir -p "/run/o/r/lib/modules/$KVER" && mount --bind "$MROOT/lib/modules/$KVER" "/run/o/r/lib/modules/$KVER"
    exec chroot /run/o/r /bin/bash "$RUN/stage2.sh"
fi
exec /bin/bash "$RUN/stage2.sh"
