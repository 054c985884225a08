#!/bin/sh
# Build the lab's test-only modules in the guest against its own headers.
# The share is read-only: build in a copy. Prints the .ko path.
set -e
out=${1:-/tmp/kmod}
rm -rf "$out"; mkdir -p "$out"
cp "$(dirname "$0")"/Kbuild "$(dirname "$0")"/*.c "$out"/
cc=$(ls /usr/bin/gcc-[0-9]* 2>/dev/null | sort -V | tail -1)
make -s -C /lib/modules/$(uname -r)/build M="$out" CC="${cc:-gcc}" modules >&2
echo "$out/skb_fault_inject.ko"
