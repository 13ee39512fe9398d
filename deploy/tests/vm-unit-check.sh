#!/bin/sh
# Boots Debian 12 (its own 6.1 kernel, systemd 252, cgroup v2) in QEMU/TCG,
# installs the .deb built by `cargo xtask deb`, and checks the shipped unit
# under real systemd: the package enables it, it starts as Type=notify with
# DynamicUser, the capability probe (caps_probe.py) passes inside the
# sandbox, OOMScoreAdjust and StateDirectory apply, and a SIGSTOPped main
# process is restarted by the watchdog. `t3pressure run` is replaced by a
# stand-in (vm_standin.py) through a drop-in, so this checks the unit, not the
# agent. Needs root, qemu-system-x86, mmdebstrap, busybox-static, cpio,
# network access to the Debian mirror. ~2 min rootfs + ~3 min boot.
#
# usage: deploy/tests/vm-unit-check.sh path/to/t3pressure_*.deb [WORKDIR]
set -eu
DEB=$(readlink -f "$1"); WORK=${2:-/tmp/t3pressure-vm-unit}
HERE=$(cd "$(dirname "$0")" && pwd)
for t in qemu-system-x86_64 mmdebstrap busybox cpio depmod mkfs.ext4; do
    command -v $t >/dev/null || { echo "FAIL: $t missing (apt-get install -y --no-install-recommends qemu-system-x86 busybox-static mmdebstrap kmod cpio)"; exit 2; }
done
mkdir -p "$WORK" && cd "$WORK"

# Kernel: Debian's current linux-image-amd64.
KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: //p' | head -1)
K=${KPKG#linux-image-}
[ -f "$KPKG.deb" ] || { apt-get download "$KPKG" && mv "$KPKG"_*.deb "$KPKG.deb"; }
rm -rf k && dpkg -x "$KPKG.deb" k

# initramfs: busybox, virtio + ext4 modules, switch_root to systemd.
rm -rf initrd && mkdir -p initrd/bin initrd/dev initrd/proc initrd/sys initrd/newroot
cp "$(command -v busybox)" initrd/bin/
M=k/lib/modules/$K/kernel
for m in drivers/virtio drivers/block/virtio_blk.ko fs/ext4 fs/jbd2 fs/mbcache.ko lib/crc16.ko crypto/crc32c_generic.ko; do
    mkdir -p "initrd/lib/modules/$K/kernel/$(dirname $m)"
    cp -r "$M/$m" "initrd/lib/modules/$K/kernel/$(dirname $m)/"
done
cp k/lib/modules/$K/modules.order k/lib/modules/$K/modules.builtin* initrd/lib/modules/$K/
depmod -b initrd "$K"
cat > initrd/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_pci virtio_blk crc32c_generic ext4; do modprobe $m; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.5; done
mount -t ext4 /dev/vda /newroot || { echo "mount failed"; exec sh; }
umount /proc /sys; mount --move /dev /newroot/dev 2>/dev/null
exec switch_root /newroot /sbin/init
INIT
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc 2>/dev/null | gzip -1) > initrd.cpio.gz

# The scenario, run as a oneshot unit after t3pressure.service.
cat > scenario.sh <<'SCEN'
#!/bin/sh
exec > /dev/ttyS0 2>&1
echo "=== SCENARIO START"
for i in $(seq 1 30); do systemctl is-active -q t3pressure && break; sleep 1; done
systemctl show t3pressure -p Type -p ActiveState -p NRestarts -p DynamicUser | sed 's/^/BEFORE /'
echo "ENABLED $(systemctl is-enabled t3pressure)"
journalctl -u t3pressure --no-pager -o cat | grep -E '^(PROBE|ID|OOMADJ|STATEDIR|WATCHDOG_USEC)'
P=$(systemctl show -p MainPID --value t3pressure); kill -STOP "$P"
sleep 45
systemctl show t3pressure -p ActiveState -p NRestarts | sed 's/^/AFTER /'
journalctl -u t3pressure --no-pager -o cat | grep -E 'Watchdog timeout'
echo "=== SCENARIO END"
systemctl poweroff
SCEN
chmod +x scenario.sh
printf '[Unit]\nAfter=t3pressure.service multi-user.target\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/scenario.sh\n[Install]\nWantedBy=multi-user.target\n' > scenario.service
printf '[Unit]\nBefore=t3pressure.service\n[Service]\nExecStart=/usr/bin/sleep 100000\n[Install]\nWantedBy=multi-user.target\n' > victim.service
printf '[Service]\nExecStart=\nExecStart=/usr/bin/python3 /usr/local/lib/standin.py\n' > standin.conf
cp "$DEB" t3pressure.deb; cp "$HERE/caps_probe.py" caps_probe.py; cp "$HERE/vm_standin.py" standin.py

rm -rf root
mmdebstrap --variant=minbase --include=systemd,systemd-sysv,dbus,python3,procps,util-linux bookworm root \
  --customize-hook='copy-in t3pressure.deb /tmp' \
  --customize-hook='chroot "$1" dpkg -i /tmp/t3pressure.deb' \
  --customize-hook='copy-in caps_probe.py standin.py /usr/local/lib' \
  --customize-hook='copy-in scenario.sh /usr/local/bin' \
  --customize-hook='copy-in scenario.service victim.service /etc/systemd/system' \
  --customize-hook='mkdir -p "$1/etc/systemd/system/t3pressure.service.d"' \
  --customize-hook='copy-in standin.conf /etc/systemd/system/t3pressure.service.d' \
  --customize-hook='chroot "$1" systemctl enable scenario.service victim.service'
mkfs.ext4 -q -F -d root rootfs.img 1536M

timeout 600 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 2048 -smp 2 -nographic \
  -no-reboot -nic none -kernel k/boot/vmlinuz-$K -initrd initrd.cpio.gz \
  -drive file=rootfs.img,format=raw,if=virtio,snapshot=on \
  -append "console=ttyS0 root=/dev/vda rw panic=-1 quiet systemd.unified_cgroup_hierarchy=1" > boot.log 2>&1 || true
sed -n '/=== SCENARIO START/,/=== SCENARIO END/p' boot.log

fail=0
check() { grep -q "$1" boot.log || { echo "FAIL: $2"; fail=1; }; }
check '^BEFORE Type=notify' 'Type=notify'
check '^BEFORE ActiveState=active' 'service active after start'
check '^BEFORE DynamicUser=yes' 'DynamicUser'
check '^ENABLED enabled' 'package enabled the service'
check '^OOMADJ -1000' 'OOMScoreAdjust=-1000'
check '^STATEDIR ok' 'StateDirectory writable'
check '^WATCHDOG_USEC 30000000' 'WatchdogSec=30s passed to the service'
check '^AFTER NRestarts=1' 'watchdog restarted the SIGSTOPped service'
check '^AFTER ActiveState=active' 'service active again after the restart'
# Every probe operation ok, except perf-based tracepoint attach under
# Debian's perf_event_paranoid=3 (see the unit's comment on CAP_PERFMON).
python3 - boot.log <<'PY' || fail=1
import json, sys
line = next(l for l in open(sys.argv[1], errors="replace") if l.startswith("PROBE "))
r = json.loads(line[6:line.rindex("}") + 1])
bad = {k: v for k, v in r.items() if not k.startswith("_") and v != "ok"
       and not (k == "perf_event_attach_tracepoint" and v == "EACCES" and int(r["_perf_event_paranoid"]) >= 3)}
print("PROBE perf_event_paranoid=%s uid=%s failed=%s" % (r["_perf_event_paranoid"], r["_uid"], bad))
sys.exit(1 if bad else 0)
PY
[ $fail = 0 ] && echo "PASS: unit checked under systemd in the VM" || { echo "FAIL (see $WORK/boot.log)"; exit 1; }
