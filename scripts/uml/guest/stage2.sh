#!/bin/bash
# Second stage of the UML guest: tmpfs dirs, shared dirs, kernel modules, configfs; then the
# command, with the caller's environment and working directory.  Its status goes to $RUN/rc.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
trap 'sync; echo o > /proc/sysrq-trigger; halt -f 2>/dev/null; sleep 30' EXIT
declare -A P
for x in $(cat /proc/cmdline); do
    case "$x" in obd.*=*) k=${x%%=*}; P[${k#obd.}]=${x#*=} ;; esac
done
RUN=${P[dir]}; MROOT=${P[mroot]}
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts 2>/dev/null; mount -t tmpfs tmpfs /dev/shm
for d in /tmp /run /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs $d; done
while read -r path; do
    [ -n "$path" ] && mkdir -p "$path" 2>/dev/null && mount -t hostfs -o "$path" hostfs "$path"
done < "$RUN/shares"
modprobe -a -d "$MROOT" ${P[mods]//,/ } 2>/dev/null
mount -t configfs configfs /sys/kernel/config
ip link set lo up 2>/dev/null; hostname obd-uml 2>/dev/null
( source "$RUN/env.sh" 2>/dev/null; cd "$(cat "$RUN/cwd")" 2>/dev/null || cd /
  exec bash "$RUN/cmd.sh" </dev/null >"$RUN/stdout" 2>"$RUN/stderr" )
echo $? > "$RUN/rc"
