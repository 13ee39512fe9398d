#!/bin/sh
# Builds the scenario VM's kernel, initramfs and rootfs into OUT (called by
# `cargo xtask vm` when the image's inputs changed; see xtask/src/vm/image.rs).
#
#   build.sh OUT SEED_UNIT
#
# Route measured to work on the build machine (../shared/docs/toolchain.md):
# Debian's 6.1 kernel package (virtio/ext4/9p are modules, so a busybox
# initramfs loads them and switch_roots), an mmdebstrap rootfs with systemd,
# the seed unit installed unchanged except MemoryMax scaled to the VM.
set -eu

OUT=$1
SEED_UNIT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/packages.sh"

step() { echo "xtask vm: image: $*"; }

mkdir -p "$OUT"
WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK"

# --- kernel -------------------------------------------------------------
step "kernel: $KERNEL_PACKAGE (apt-get download)"
KPKG=$(apt-cache depends "$KERNEL_PACKAGE" | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)
[ -n "$KPKG" ] || { echo "cannot resolve $KERNEL_PACKAGE" >&2; exit 1; }
(cd "$WORK" && apt-get download -q "$KPKG" >/dev/null 2>&1) \
    || (cd "$WORK" && apt-get download "$KPKG")
dpkg -x "$WORK"/linux-image-*.deb "$WORK/kernel"
KVER=$(ls "$WORK/kernel/lib/modules")
depmod -b "$WORK/kernel" "$KVER"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz.new"

# --- initramfs ----------------------------------------------------------
step "initramfs: busybox + $INITRD_MODULES"
IR="$WORK/initrd"
mkdir -p "$IR/bin" "$IR/proc" "$IR/sys" "$IR/dev" "$IR/newroot" "$IR/lib/modules"
cp /bin/busybox "$IR/bin/busybox"
: > "$IR/modules.order"
for m in $INITRD_MODULES; do
    modprobe -d "$WORK/kernel" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r path; do
    name=$(basename "$path")
    cp "$path" "$IR/lib/modules/$name"
    echo "$name" >> "$IR/modules.order"
done
cp "$HERE/initrd-init.sh" "$IR/init"
chmod 755 "$IR/init"
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initrd.cpio.gz.new"

# --- rootfs -------------------------------------------------------------
step "rootfs: mmdebstrap $SUITE ($ROOTFS_PACKAGES)"
ROOT="$WORK/rootfs"
mmdebstrap --quiet --variant=minbase --include="$ROOTFS_PACKAGES" "$SUITE" "$ROOT"

step "rootfs: users, seed unit (MemoryMax=$VM_MEMORY_MAX), stand-in t3, runner unit"
echo t3vm > "$ROOT/etc/hostname"
cat > "$ROOT/etc/fstab" <<'EOF'
/dev/vda  /       ext4  rw,noatime  0 1
share     /share  9p    trans=virtio,version=9p2000.L,msize=262144,nofail  0 0
EOF
mkdir -p "$ROOT/share" "$ROOT/etc/t3-serve"
port=8001
for u in $VM_USERS; do
    chroot "$ROOT" useradd --create-home --user-group --shell /bin/sh "$u"
    echo "T3_PORT=$port" > "$ROOT/etc/t3-serve/$u.env"
    port=$((port + 1))
done
# The seed unit, unchanged except MemoryMax (16G does not fit a 2 GiB VM).
grep -q '^MemoryMax=16G$' "$SEED_UNIT" || { echo "seed unit has no MemoryMax=16G line" >&2; exit 1; }
sed "s/^MemoryMax=16G\$/MemoryMax=$VM_MEMORY_MAX/" "$SEED_UNIT" > "$ROOT/etc/systemd/system/t3-serve@.service"
install -m 755 "$HERE/t3-standin.py" "$ROOT/usr/bin/t3"
install -m 644 "$HERE/t3vm-runner.service" "$ROOT/etc/systemd/system/t3vm-runner.service"
ln -sf /etc/systemd/system/t3vm-runner.service "$ROOT/etc/systemd/system/multi-user.target.wants/t3vm-runner.service"
# Quiet, fast boot: no login prompts, no timers competing for the 2 vCPUs;
# Debian's prometheus.service masked (io_stall runs its own instance).
for u in serial-getty@ttyS0.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
         systemd-timesyncd.service e2scrub_reap.service fstrim.timer prometheus.service; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$u"
done
rm -rf "$ROOT/var/cache/apt/archives/"*.deb "$ROOT/var/lib/apt/lists/"*

step "rootfs: mkfs.ext4 $ROOTFS_SIZE"
rm -f "$OUT/rootfs.img.new"
mkfs.ext4 -q -F -d "$ROOT" "$OUT/rootfs.img.new" "$ROOTFS_SIZE"

mv "$OUT/vmlinuz.new" "$OUT/vmlinuz"
mv "$OUT/initrd.cpio.gz.new" "$OUT/initrd.cpio.gz"
mv "$OUT/rootfs.img.new" "$OUT/rootfs.img"
echo "$KPKG" > "$OUT/kernel.version"
rm -rf "$WORK"
step "done"
