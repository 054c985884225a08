"""The run loop both tools share: checks, hook resolution, compile, attach,
poll, statistics on SIGINT/SIGTERM."""
import signal
import time

from skbtrace.kernel import btf, event, flightrec, gso as gso_mod, hooks as hooks_mod
from skbtrace.live import flight_recorder, loader
from skbtrace.output import record
from skbtrace.output.clock import Clock, monotonic_ns
from skbtrace.kernel.decoder import Decoder
from skbtrace.errors import EnvError
from skbtrace.live.stats import Stats
from skbtrace.output.formatter import Formatter
from skbtrace.output.sink import ReaderGone, Sink, info

POLL_MS = 100
LAST_CHANGE_ENTRIES = 65536


class Tool(object):
    """What differs between the two tools. Subclasses override the hooks."""
    name = None
    c_file = None
    event_names = ()
    stages = ()     # stage programs of the C file, tail-called by the hook stubs

    def __init__(self, args, filters):
        self.args = args
        self.filters = filters
        self.hooks = self.make_hooks()
        self.kernel_btf = None
        self.gso = gso_mod.DEFAULT
        self.notes = []             # startup notes about what this kernel allows
        self.ring_pages = 0         # a BPF ring buffer of this many pages; 0: perf buffers

    def make_hooks(self):
        raise NotImplementedError

    def load_btf(self):
        try:
            self.kernel_btf = btf.BTF.load()
        except btf.BTFError:
            self.kernel_btf = None
        self.gso = gso_mod.GsoTable.from_btf(self.kernel_btf)
        if self.kernel_btf is None:
            self.notes.append("no kernel BTF: gso_type names from the built-in 6.1 table")
        self.adapt_hooks()

    def adapt_hooks(self):
        for h in self.hooks:
            if h.name == "skb_gro_receive" and self.kernel_btf is not None:
                depth = self.kernel_btf.func_first_param_ptr_depth("skb_gro_receive")
                if depth == 2:      # before 4.19: skb_gro_receive(struct sk_buff **head, ...)
                    h.skb = hooks_mod.GRO_HEAD_PP

    def config_lines(self):
        lines = ["#define STACK_TRACES %d" % (1 if self.args.stack_trace else 0),
                 "#define LAST_CHANGE_ENTRIES %d" % LAST_CHANGE_ENTRIES,
                 "#define NR_STAGES %d" % max(1, len(self.stages)),
                 "#define RINGBUF_PAGES %d" % self.ring_pages]
        lines += ["#define STAGE_%s %d" % (n.upper(), i) for i, n in enumerate(self.stages)]
        lines.append("#define FLIGHT_RECORDER %d" % flight_recorder.MODES.get(
            getattr(self.args, "flight_recorder", None), event.FR_OFF))
        lines += self.gso.c_defines()
        lines += self.filters.c_defines()
        return lines

    def program_text(self, hooks):
        return loader.build_text(self.c_file, [h.c_line() for h in hooks],
                                 self.config_lines(), self.name)

    # per-record hooks for subclasses
    def on_record(self, record):
        pass

    def handler(self, formatter, hooks_by_id, stats, symbols=None):
        """The fast path for this tool's events (Formatter.handler()), or
        None: a subclass that overrides on_record() gets Records, through
        the decoder."""
        if type(self).on_record is not Tool.on_record:
            return None
        return formatter.handler(hooks_by_id, stats, symbols)

    def extra_stats(self, stats):
        pass

    def before_trace(self, sink):
        pass


class _Stop(object):
    def __init__(self):
        self.signal = None

    def __call__(self, signum, _frame):
        self.signal = signum


class _Reopen(object):
    """SIGHUP with -o (logrotate's postrotate): the handler only takes note;
    the main loop reopens the file between polls, never inside a write."""

    def __init__(self, sink):
        self.sink = sink
        self.pending = False

    def __call__(self, _signum, _frame):
        self.pending = True

    def apply(self):
        if not self.pending:
            return
        self.pending = False
        err = self.sink.reopen()
        info("SIGHUP: %s" % (err or "reopened %s" % self.sink.path))


def run(tool, formatter_cls=Formatter, stats=None):
    args = tool.args
    sink = Sink(args.output)
    # Taken from the start: logrotate may signal while bcc still compiles, and
    # SIGHUP's default would end the run. Without -o there is no file to
    # reopen, and stdout goes on as it was.
    rotate = _Reopen(sink)
    signal.signal(signal.SIGHUP, rotate if args.output else signal.SIG_IGN)
    clock = Clock()
    tool.load_btf()
    if args.ebpf:
        if getattr(args, "backend", "kprobe") == "fentry":
            # the text a fentry run would compile, as far as this kernel's
            # kallsyms and BTF tell without bcc
            try:
                loader.resolve_hooks(None, tool.hooks)
            except (IOError, OSError, AttributeError):
                pass
            loader.choose_backends([h for h in tool.hooks if h.symbol], "fentry",
                                   tool.kernel_btf, (True, None))
        if getattr(args, "buffer", "perf") == "ring":
            tool.ring_pages = loader.ring_pages(args.buffer_pages)
        try:
            for line in tool.program_text(tool.hooks).splitlines():
                sink.write(line)
        except ReaderGone:
            pass
        return 0
    bcc = loader.preflight()
    if args.json:
        record.identity()       # host and boot id as they are at start
    recorder = None
    if args.flight_recorder:
        recorder = flight_recorder.Recorder(args.flight_recorder, loader.tracefs_dir())
        recorder.check()
    tool.ring_pages = choose_buffer(args, bcc, tool.kernel_btf)
    loader.resolve_hooks(bcc.BPF, tool.hooks)
    present = [h for h in tool.hooks if h.symbol]
    for h in tool.hooks:
        if not h.symbol:
            info("skipped hook %s: %s" % (h.name, h.skip_reason))
    if not present:
        raise EnvError("none of the hooks exists in this kernel: %s" % ", ".join(
            h.name for h in tool.hooks))
    for n in tool.notes:
        info("note: %s" % n)
    loader.choose_backends(present, args.backend, tool.kernel_btf,
                           loader.kfunc_support(bcc.BPF) if args.backend != "kprobe" else
                           (False, "--backend kprobe"))
    program = loader.Program(bcc, tool.program_text(present), present, tool.stages)
    info("compiling %d hooks (filters: %s)..." % (len(present), tool.filters.describe()))
    t0 = time.time()
    try:
        program.compile()
    except EnvError as e:
        if recorder and "printk" in str(e):
            raise EnvError("--flight-recorder: this kernel refuses bpf_trace_printk in kprobe "
                           "programs (%s)" % e)
        raise
    if recorder:
        program.set_names(flightrec.names_table(tool.hooks))
    t1 = time.time()
    program.attach()
    # programs are verified as they attach: fentry hooks each carry their work
    info("compiled in %.1f s, loaded and attached in %.1f s" % (t1 - t0, time.time() - t1))
    for line in backend_lines(program.attached, args.backend):
        info(line)
    try:
        if recorder:
            for line in recorder.arm():
                info(line)
        return _trace(tool, program, formatter_cls, stats, sink, clock, recorder, rotate)
    finally:
        if recorder:
            for line in recorder.restore():
                info("flight recorder: " + line)


def choose_buffer(args, bcc, kernel_btf):
    """The ring buffer's size in pages, or 0 for perf buffers, as --buffer
    asks and the kernel and bcc allow; says which at startup."""
    mode = getattr(args, "buffer", "perf")
    if mode == "perf":
        info("event buffer: perf, %d pages per CPU (--buffer perf)" % args.buffer_pages)
        return 0
    ok, why = loader.ringbuf_support(bcc.BPF, kernel_btf)
    if not ok:
        if mode == "ring":
            raise EnvError("--buffer ring: %s" % why)
        info("event buffer: perf, %d pages per CPU (no ring buffer: %s)" % (
            args.buffer_pages, why))
        return 0
    pages = loader.ring_pages(args.buffer_pages)
    info("event buffer: ring, %d pages shared by the CPUs (--buffer %s)" % (pages, mode))
    return pages


def backend_lines(attached, mode):
    """Startup lines: which backend each hook got, and why a kprobe hook
    has no fentry."""
    out = []
    for b in (hooks_mod.FENTRY, hooks_mod.KPROBE):
        hs = [h for h in attached if h.backend == b]
        if not hs:
            continue
        out.append("backend %s (--backend %s): %s" % (b, mode, ", ".join(h.name for h in hs)))
        reasons = {}
        for h in hs:
            if h.backend_why and h.backend_why != "--backend kprobe":
                reasons.setdefault(h.backend_why, []).append(h.name)
        for why, names in sorted(reasons.items()):
            out.append("  not fentry: %s: %s" % (", ".join(names), why))
    return out


class _LostLines(object):
    """Turns bcc's lost callback into a [LOST n] line at that point of the
    stream, with the kernel's per-CPU and per-hook counts since the last one."""

    def __init__(self, program, formatter, sink, hooks, stop):
        self.program, self.formatter, self.sink, self.stop = program, formatter, sink, stop
        self.names = dict((h.hook_id, h.name) for h in hooks)
        self.cpu = []
        self.hooks = {}

    def __call__(self, count):
        try:
            cpu = self.program.percpu("counters", event.CNT_SUBMIT_FAIL)
            hooks = self.program.hook_lost()
            d_cpu = [n - (self.cpu[i] if i < len(self.cpu) else 0) for i, n in enumerate(cpu)]
            d_hook = dict((self.names.get(k, "hook#%d" % k), n - self.hooks.get(k, 0))
                          for k, n in hooks.items() if n - self.hooks.get(k, 0))
            self.cpu, self.hooks = cpu, hooks
            for line in self.formatter.lost_lines(count, d_cpu, d_hook, monotonic_ns()):
                self.sink.write(line)
        except ReaderGone:
            self.stop.signal = "pipe"
        except Exception as e:  # cannot cross bcc's ctypes callback
            info("lost-events line not written: %s" % e)


def _trace(tool, program, formatter_cls, stats, sink, clock, recorder, rotate):
    args = tool.args
    stop = _Stop()
    decoder = Decoder(tool.hooks)
    formatter = formatter_cls(clock, tool.gso, verbose=args.verbose, json_mode=args.json,
                              tool=tool.name, stacks=args.stack_trace)
    if stats is None:
        stats = Stats(tool.hooks, tool.event_names)
    stats.tool = tool.name
    stats.stacks = bool(args.stack_trace)
    stats.flight_recorder = args.flight_recorder
    stats.buffer = formatter.buffer = "ring" if tool.ring_pages else "perf"
    # bytes -> the event's lines in one call (skbtrace/output/fastpath.py), written
    # at once; None: Decoder, Stats.add(), on_record() and Formatter.lines()
    handle = tool.handler(formatter, decoder.by_id, stats,
                          program.symbols if args.stack_trace else None)
    write = sink.write_ascii if formatter.json_mode else sink.write_text  # --json: bytes

    def on_event(data):
        # An exception cannot cross bcc's ctypes callback (it would be printed
        # and swallowed there), so it is turned into a stop request.
        if stop.signal is not None and sink.gone:
            return
        try:
            if handle is not None:
                write(handle(data))
                return
            record = decoder.decode(data)
            if args.stack_trace:
                record.stack = program.symbols(record.stack_addrs)
            stats.add(record)
            tool.on_record(record)
            for line in formatter.lines(record):
                sink.write(line)
        except ReaderGone:
            stop.signal = "pipe"
        except ValueError as e:
            stats.decode_errors += 1
            info("event dropped: %s" % e)

    program.open(on_event, args.buffer_pages,
                 lost_callback=_LostLines(program, formatter, sink, tool.hooks, stop),
                 ring=bool(tool.ring_pages))
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        tool.before_trace(sink)
        for line in formatter.header():
            sink.write(line)
        info("Tracing %d hooks (%d skipped)... Hit Ctrl-C to end." % (
            len(program.attached), len(tool.hooks) - len(program.attached)))
        modules = loader.ModuleWatch(tool.hooks)
        while stop.signal is None:
            program.poll(POLL_MS)
            sink.flush()        # the poll's lines, in one write (output/sink.py)
            rotate.apply()
            for line in modules.check():
                info(line)
        # a rotation signalled just before the stop: the rest goes to the new file
        rotate.apply()
        if stop.signal != "pipe":
            program.poll(0)     # drain what is already in the buffers
            sink.flush()
            rotate.apply()
    except ReaderGone:
        return 0
    if sink.gone:
        return 0
    if recorder:
        stats.flight_restored = recorder.restore()
    kernel = program.counters()
    hits = program.hook_hits()
    lost = program.hook_lost()
    tool.extra_stats(stats)
    rotate.apply()
    try:
        if args.json:
            sink.write(record.dumps(stats.to_dict(kernel, program.lost_total, hits, lost)))
        else:
            for line in stats.render(kernel, program.lost_total, hits, hook_lost=lost):
                sink.write(line)
        if args.output and not args.json:
            for line in stats.render(kernel, program.lost_total, hits, hook_lost=lost):
                info(line)
    except ReaderGone:
        return 0
    finally:
        sink.close()
    return 0
