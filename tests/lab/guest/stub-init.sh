#!/bin/sh
# Baked into the lab image as /sbin/lab-init: just enough to reach the
# project share, then the real init (guest/init.sh) from the share, so it can
# change without rebuilding the image.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
modprobe 9pnet_virtio
modprobe 9p
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 project /project
exec /bin/sh /project/tests/lab/guest/init.sh
