"""Traffic scenarios inside the lab guest, in network namespaces only, with
addresses from 198.18.0.0/15.

Topology (`topo`):   h1 [eth0 198.18.1.1] -- [r-h1 198.18.1.254] r
                     r [r-h2 198.18.2.254] -- [eth0 198.18.2.1] h2
vxlan overlay (`vxlan`): h1 vx0 198.19.0.1/24 <-> h2 vx0 198.19.0.2/24, VNI 42,
dstport 4789, over the routed underlay.

    traffic.py topo [--gro-list on|off] [--udp-gro-fwd on|off] [--sender-tso on|off]
                    [--router-egress-gso on|off] [--router-egress-tso on|off]
    traffic.py udp-gso [--count 20] [--size 14000] [--gso-size 1000] [--dst 198.18.2.1]
    traffic.py tcp-bulk [--seconds 2] [--dst 198.18.2.1]
    traffic.py vxlan [--csum on|off] [--gro on|off]
    traffic.py tc-attach --netns r --dev r-h1 --dir ingress --src FILE.c --fn NAME
    traffic.py cleanup
    traffic.py guest-nic [--addr 198.18.100.2/24]   # the guest's virtio_net NIC (root netns)
"""
import argparse
import os
import select
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NETNS = ("h1", "r", "h2")
UDP_SEGMENT = 103
SOL_UDP = 17
SO_RCVBUFFORCE = 33


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and r.returncode:
        raise SystemExit("traffic: `%s` failed: %s" % (cmd, r.stderr.decode().strip()))
    return r.stdout.decode()


def ns(name, cmd, check=True):
    return sh("ip netns exec %s %s" % (name, cmd), check)


def cleanup(_a=None):
    for n in NETNS:
        sh("ip netns del %s" % n, check=False)


def topo(a):
    cleanup()
    for n in NETNS:
        sh("ip netns add %s" % n)
        ns(n, "ip link set lo up")
    sh("ip -n h1 link add eth0 type veth peer name r-h1 netns r")
    sh("ip -n r link add r-h2 type veth peer name eth0 netns h2")
    ns("h1", "ip addr add 198.18.1.1/24 dev eth0")
    ns("r", "ip addr add 198.18.1.254/24 dev r-h1")
    ns("r", "ip addr add 198.18.2.254/24 dev r-h2")
    ns("h2", "ip addr add 198.18.2.1/24 dev eth0")
    for n, d in (("h1", "eth0"), ("r", "r-h1"), ("r", "r-h2"), ("h2", "eth0")):
        ns(n, "ip link set %s up" % d)
    ns("h1", "ip route add default via 198.18.1.254")
    ns("h2", "ip route add default via 198.18.2.254")
    ns("r", "sysctl -qw net.ipv4.ip_forward=1")
    # GRO on the router's veths in both directions (veth runs NAPI/GRO when
    # gro is on); the hosts segment themselves so the router's GRO has work.
    for dev in ("r-h1", "r-h2"):
        ns("r", "ethtool -K %s gro on" % dev)
        ns("r", "ethtool -K %s rx-gro-list %s" % (dev, a.gro_list), check=False)
        ns("r", "ethtool -K %s rx-udp-gro-forwarding %s" % (dev, a.udp_gro_fwd), check=False)
    if a.xdp == "auto" and veth_gro_needs_xdp():
        xdp_pass([("r", "r-h1"), ("r", "r-h2")])
    if a.router_egress_gso == "off":
        # segment on the router itself (validate_xmit_skb) instead of in h2
        ns("r", "ethtool -K r-h2 tx-udp-segmentation off tx-gso-list off", check=False)
    if a.router_egress_tso == "off":
        # forwarded TCP GSO skbs are segmented on the router (skb_segment)
        ns("r", "ethtool -K r-h2 tso off")
    if a.sender_tso == "off":
        for n in ("h1", "h2"):
            ns(n, "ethtool -K eth0 tso off tx-udp-segmentation off", check=False)
    # let the first packets resolve neighbours before tests count events
    ns("h1", "ping -c1 -W2 198.18.2.1", check=False)


SINK_CAP_SECONDS = 300


def _udp_sink(port, linger):
    """Count bytes until the sender is done (our stdin closes) and then
    nothing has arrived for `linger` seconds. A window that starts when the
    sink is ready lost everything when the sender's own Python start took
    longer than the window (a loaded TCG host: 0 bytes, every time)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # a reader slowed down by TCG and tracing must not lose datagrams to a
    # full default (208 KiB) receive buffer: tests compare byte counts
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    s.bind(("0.0.0.0", port))
    s.setblocking(False)
    print("udp-sink ready", flush=True)
    n, sender_done, last = 0, False, time.time()
    cap = time.time() + SINK_CAP_SECONDS
    while time.time() < cap:
        if sender_done and time.time() - last >= linger:
            break
        rd, _, _ = select.select([s] + ([] if sender_done else [sys.stdin]), [], [], 0.2)
        if sys.stdin in rd and not sys.stdin.readline():
            sender_done, last = True, time.time()
        if s in rd:
            try:
                while True:
                    n += len(s.recv(65535))
                    last = time.time()
            except BlockingIOError:
                pass
    print("udp-sink received %d bytes" % n)


def _udp_send(dst, port, count, size, gso_size):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(SOL_UDP, UDP_SEGMENT, gso_size)
    payload = b"x" * size
    for _ in range(count):
        s.sendto(payload, (dst, port))
        time.sleep(0.002)
    print("udp-gso sent %d x %d bytes (gso_size %d) to %s:%d" % (count, size, gso_size, dst, port))


def udp_gso(a):
    sink = subprocess.Popen(["ip", "netns", "exec", a.dst_ns, sys.executable, __file__,
                             "_udp-sink", "--port", str(a.port), "--seconds", str(a.seconds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            universal_newlines=True)
    # send only once the socket is bound (a Python start under TCG can take
    # longer than any fixed sleep)
    sink.stdout.readline()
    try:
        print(ns(a.src_ns, "%s %s _udp-send --dst %s --port %d --count %d --size %d "
                 "--gso-size %d" % (sys.executable, __file__, a.dst, a.port, a.count, a.size,
                                    a.gso_size)), end="")
    finally:
        sink.stdin.close()          # the sender is done: the sink lingers, then reports
    print(sink.stdout.read(), end="")
    sink.wait()


def _tcp_server(port, seconds):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    print("tcp-server ready", flush=True)
    s.settimeout(seconds + 60)
    n = 0
    try:
        c, _ = s.accept()
        c.settimeout(2)
        while True:
            d = c.recv(1 << 16)
            if not d:
                break
            n += len(d)
    except socket.timeout:
        pass
    print("tcp-server received %d bytes" % n)


def _tcp_client(dst, port, seconds):
    s = socket.create_connection((dst, port), timeout=5)
    s.settimeout(2)
    buf = b"y" * (1 << 16)
    end, n = time.time() + seconds, 0
    try:
        while time.time() < end:
            n += s.send(buf)
    except (socket.timeout, OSError):
        pass
    s.close()
    print("tcp-client sent %d bytes" % n)


def tcp_bulk(a):
    srv = subprocess.Popen(["ip", "netns", "exec", a.dst_ns, sys.executable, __file__,
                            "_tcp-server", "--port", str(a.port), "--seconds", str(a.seconds)],
                           stdout=subprocess.PIPE, universal_newlines=True)
    srv.stdout.readline()           # listening: a fixed sleep lost the race on a slow host
    print(ns(a.src_ns, "%s %s _tcp-client --dst %s --port %d --seconds %s" % (
        sys.executable, __file__, a.dst, a.port, a.seconds), check=False), end="")
    print(srv.stdout.read(), end="")
    srv.wait()


def vxlan(a):
    csum = "udpcsum" if a.csum == "on" else "noudpcsum"
    for n, local, remote, ip in (("h1", "198.18.1.1", "198.18.2.1", "198.19.0.1"),
                                 ("h2", "198.18.2.1", "198.18.1.1", "198.19.0.2")):
        ns(n, "ip link del vx0", check=False)
        ns(n, "ip link add vx0 type vxlan id 42 local %s remote %s dstport 4789 %s" % (
            local, remote, csum))
        ns(n, "ip addr add %s/24 dev vx0" % ip)
        ns(n, "ip link set vx0 up")
    ns("h2", "ethtool -K eth0 gro %s" % a.gro, check=False)
    if a.gro == "on" and a.xdp == "auto" and veth_gro_needs_xdp():
        xdp_pass([("h2", "eth0")])
    # veth hands packets to the peer's NAPI GRO only when the sender has TSO off
    ns("r", "ethtool -K r-h2 tso off", check=False)
    ns("h1", "ping -c1 -W2 198.19.0.2", check=False)


def guest_nic(a):
    """Find the guest's virtio_net interface (root namespace), give it the
    lab address and bring it up; prints its name."""
    for _ in range(100):
        for dev in sorted(os.listdir("/sys/class/net")):
            drv = os.path.realpath("/sys/class/net/%s/device/driver" % dev)
            if os.path.basename(drv) == "virtio_net":
                sh("ip addr replace %s dev %s" % (a.addr, dev))
                sh("ip link set %s up" % dev)
                print(dev)
                return
        time.sleep(0.1)
    raise SystemExit("traffic: no virtio_net interface in the guest")


def veth_gro_needs_xdp():
    """Before 5.13 a veth runs NAPI, and so GRO, only while an XDP program is
    attached (the kernel's own udpgro_fwd.sh selftest attached xdp_dummy for
    this); later kernels start NAPI when gro is switched on. There is no
    feature to probe from user space short of sending traffic, so this test
    helper (not the tools) reads the release."""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) < (5, 13)


XDP_PASS_C = "int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }"


def xdp_pass(targets):
    """Attach an XDP_PASS program to each (netns, dev): one BCC compile, then
    setns(2) into each namespace (the detector's own switcher). The
    attachment outlives this process."""
    from bcc import BPF
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
    from skbtrace.live.static_check import _InNetns
    fn = BPF(text=XDP_PASS_C).load_func(b"xdp_pass", BPF.XDP)
    for netns, dev in targets:
        with _InNetns(netns):
            BPF.attach_xdp(dev, fn, 0)
        print("xdp_pass attached to %s in %s (veth GRO needs XDP on %s)" % (
            dev, netns, os.uname().release))


def tc_attach(a):
    """Compile with BCC and attach direct-action; the filter keeps the program
    after this process exits."""
    from bcc import BPF
    from pyroute2 import IPRoute
    b = BPF(src_file=a.src)
    fn = b.load_func(a.fn.encode(), BPF.SCHED_CLS)
    ip = IPRoute()
    idx = ip.link_lookup(ifname=a.dev)[0]
    try:
        ip.tc("add", "clsact", idx)
    except Exception:
        pass    # already there
    parent = "ffff:fff2" if a.dir == "ingress" else "ffff:fff3"
    ip.tc("add-filter", "bpf", idx, ":1", fd=fn.fd, name=fn.name, parent=parent,
          classid=1, direct_action=True)
    print("attached %s from %s to %s %s" % (a.fn, os.path.basename(a.src), a.dev, a.dir))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    t = sub.add_parser("topo")
    t.add_argument("--gro-list", default="on", choices=["on", "off"])
    t.add_argument("--udp-gro-fwd", default="off", choices=["on", "off"])
    t.add_argument("--sender-tso", default="off", choices=["on", "off"])
    t.add_argument("--router-egress-gso", default="on", choices=["on", "off"])
    t.add_argument("--router-egress-tso", default="on", choices=["on", "off"])
    # off: no XDP_PASS helper programs even where veth GRO needs them (a
    # STATIC check that must see namespaces without BPF programs)
    t.add_argument("--xdp", default="auto", choices=["auto", "off"])
    for name in ("udp-gso", "tcp-bulk"):
        u = sub.add_parser(name)
        u.add_argument("--dst", default="198.18.2.1")
        u.add_argument("--src-ns", default="h1")
        u.add_argument("--dst-ns", default="h2")
        u.add_argument("--port", type=int, default=9000)
        u.add_argument("--seconds", type=float, default=2)
        if name == "udp-gso":
            u.add_argument("--count", type=int, default=20)
            u.add_argument("--size", type=int, default=14000)
            u.add_argument("--gso-size", type=int, default=1000)
    v = sub.add_parser("vxlan")
    v.add_argument("--csum", default="on", choices=["on", "off"])
    v.add_argument("--gro", default="on", choices=["on", "off"])
    v.add_argument("--xdp", default="auto", choices=["auto", "off"])
    c = sub.add_parser("tc-attach")
    c.add_argument("--netns", required=True)
    c.add_argument("--dev", required=True)
    c.add_argument("--dir", default="ingress", choices=["ingress", "egress"])
    c.add_argument("--src", required=True)
    c.add_argument("--fn", required=True)
    sub.add_parser("cleanup")
    g = sub.add_parser("guest-nic")
    g.add_argument("--addr", default="198.18.100.2/24")
    i = sub.add_parser("_udp-sink")
    i.add_argument("--port", type=int)
    i.add_argument("--seconds", type=float)
    i = sub.add_parser("_udp-send")
    for f in ("--port", "--count", "--size", "--gso-size"):
        i.add_argument(f, type=int)
    i.add_argument("--dst")
    i = sub.add_parser("_tcp-server")
    i.add_argument("--port", type=int)
    i.add_argument("--seconds", type=float)
    i = sub.add_parser("_tcp-client")
    i.add_argument("--port", type=int)
    i.add_argument("--seconds", type=float)
    i.add_argument("--dst")
    i = sub.add_parser("_tc-attach-here")
    for f in ("--dev", "--dir", "--src", "--fn"):
        i.add_argument(f)
    a = p.parse_args()
    if a.cmd == "topo":
        topo(a)
    elif a.cmd == "udp-gso":
        udp_gso(a)
    elif a.cmd == "tcp-bulk":
        tcp_bulk(a)
    elif a.cmd == "vxlan":
        vxlan(a)
    elif a.cmd == "tc-attach":
        print(ns(a.netns, "%s %s _tc-attach-here --dev %s --dir %s --src %s --fn %s" % (
            sys.executable, __file__, a.dev, a.dir, os.path.abspath(a.src), a.fn)), end="")
    elif a.cmd == "_tc-attach-here":
        tc_attach(a)
    elif a.cmd == "cleanup":
        cleanup()
    elif a.cmd == "guest-nic":
        guest_nic(a)
    elif a.cmd == "_udp-sink":
        _udp_sink(a.port, a.seconds)
    elif a.cmd == "_udp-send":
        _udp_send(a.dst, a.port, a.count, a.size, a.gso_size)
    elif a.cmd == "_tcp-server":
        _tcp_server(a.port, a.seconds)
    elif a.cmd == "_tcp-client":
        _tcp_client(a.dst, a.port, a.seconds)
    else:
        p.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
