# The scenario VM image's inputs (sourced by build.sh; hashed by the xtask,
# so changing a line here rebuilds the image).
SUITE=bookworm
# Debian's current 6.1 kernel: PSI on by default, BTF, memcg, BPF events.
KERNEL_PACKAGE=linux-image-amd64
# Full python3 (python3-minimal has no http.client); bpftool counts the
# agent's BPF map entries in the churn scenario; prometheus (Debian's 2.42,
# ~96 MB installed with its web UI's JS) scrapes the agent in io_stall and
# evaluates deploy/prometheus/alerts.yml (its own unit is masked: the
# scenario starts it). The agent itself comes as its .deb over the share.
ROOTFS_PACKAGES=systemd,systemd-sysv,udev,dbus,python3,procps,kmod,iproute2,util-linux,bpftool,prometheus
INITRD_MODULES="virtio_pci virtio_blk ext4 9pnet_virtio 9p"
ROOTFS_SIZE=2048M
# The seed unit's MemoryMax=16G, scaled to a 2 GiB VM.
VM_MEMORY_MAX=512M
# alice and bob are the scenario users; carol is started and stopped by churn.
VM_USERS="alice bob carol"
