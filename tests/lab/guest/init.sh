#!/bin/sh
# PID 1 of a lab guest, exec'd by the image's /sbin/lab-init (stub-init.sh)
# once /project is mounted: mount what BCC and the tests need, start the agent.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -o remount,rw /
hostname lab
ip link set lo up
# the fast-boot initramfs loads only what mounting the root needs
modprobe virtio_console
modprobe virtio_net
echo "lab-init: kernel $(uname -r) ready at $(cut -d' ' -f1 /proc/uptime) s" > /dev/console
exec /usr/bin/python3 /project/tests/lab/guest/agent.py
