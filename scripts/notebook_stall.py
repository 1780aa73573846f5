"""Run every notebook headless, each in a fresh kernel, the way tests/test_notebooks.py does, several times over, and
say for each cell how long the client waited for the kernel's reply and how long that reply had already been sent.

    python scripts/notebook_stall.py --runs 10 --client fixed --log /tmp/stall_fixed.jsonl
    python scripts/notebook_stall.py --runs 10 --client nbclient --zmq-trace --log /tmp/stall_nbclient.jsonl
    python scripts/notebook_stall.py --mechanism       # the stall in two sockets, no notebook, a few seconds

`--client nbclient` is nbclient as it ships (one socket poll over the whole cell timeout); `--client fixed` is
tests/notebook_client.py (after each send the socket is asked for ZMQ_EVENTS, and polls last at most 0.5 s, repeated
until the timeout); `--client sliced` has only the short polls. For every cell the log has
`wait` (execute_request sent to execute_reply received, s) and `late` (execute_reply received minus the time the
kernel stamped in its header, s): a reply that is late by seconds was sent and sat unread in the client. When a cell
has waited `--probe-after` seconds, the client's shell and iopub sockets are looked at from inside the client's
event loop: whether their ZMQ_FD is readable (select, which takes nothing from the loop), what polls wait on them,
and, only when the FD is not readable, ZMQ_EVENTS (POLLIN: a message is queued in the socket); and `py-spy dump` of
the client and the kernel is written next to the log (if py-spy is installed). With `--client fixed`, `rescued`
counts the sends after which a reply was queued in the shell socket, its FD not readable, while a poll waited: without
the re-check each would wait for the poll's timer, unless the loop had already picked up the socket's wakeup in the
same turn (an upper bound, then). `--zmq-trace` keeps, for each reply that came late, every
call pyzmq made on the shell and iopub sockets around it.

Output: one JSON line per notebook run in --log, and a line per notebook and a table per pass on stdout.
"""
import argparse
import asyncio
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import nbclient  # noqa: E402
import nbformat  # noqa: E402
import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402
from jupyter_client.asynchronous import AsyncKernelClient  # noqa: E402
from jupyter_client.channels import AsyncZMQSocketChannel  # noqa: E402
from traitlets import Type  # noqa: E402

import notebook_client  # noqa: E402  tests/notebook_client.py

NOTEBOOKS = REPO / "notebooks"
TRACE: list[tuple[str, float, float, dict]] = []        # (channel, monotonic, wall clock, message) per message read
RESCUES: list[dict] = []    # sends after which a reply was queued, unseen by the loop, while a poll waited


def traced(base: type, name: str, count_rescues: bool = False) -> type:
    """base's get_msg, noting when each message was handed to the caller; with count_rescues, base's send with a
    note of each time the send left a message queued behind an FD that is not readable while a poll waited for it
    (what notebook_client.Channel.send then hands back to the loop with socket.get(zmq.EVENTS))."""
    class Traced(base):
        async def get_msg(self, timeout=None):
            msg = await super().get_msg(timeout=timeout)
            TRACE.append((name, time.monotonic(), time.time(), msg))
            return msg

        if count_rescues:
            def send(self, msg):
                sock = self.socket
                waiting = bool(sock._state & zmq.POLLIN)
                AsyncZMQSocketChannel.send(self, msg)           # the write alone, through Session.send
                readable = bool(select.select([sock._fd], [], [], 0)[0])
                pollin = bool(sock._shadow_sock.get(zmq.EVENTS) & zmq.POLLIN)
                if waiting and pollin and not readable:
                    RESCUES.append({"channel": name, "sent": msg["header"]["msg_type"], "t": time.monotonic()})
                sock.get(zmq.EVENTS)                            # notebook_client.Channel.send's re-check
    Traced.__name__ = f"Traced{base.__name__}"
    return Traced


class SlicedOnly(notebook_client.Channel):
    """notebook_client.Channel's sliced get_msg with jupyter_client's own send (no re-check after a send)."""
    send = AsyncZMQSocketChannel.send


def kernel_client_class(mode: str) -> type:
    base = {"nbclient": AsyncZMQSocketChannel, "sliced": SlicedOnly, "fixed": notebook_client.Channel}[mode]

    class Client(AsyncKernelClient):
        shell_channel_class = Type(traced(base, "shell", count_rescues=mode == "fixed"))
        iopub_channel_class = Type(traced(base, "iopub"))
        stdin_channel_class = Type(base)
        control_channel_class = Type(base)
    return Client


class SocketTrace:
    """The zmq-level life of one zmq.asyncio socket: every ZMQ_EVENTS read, recv, send and zmq_poll pyzmq makes on
    it, every wakeup of its FD reader in the event loop, each with the time and whether the FD was readable just
    before (select) -- the last `keep` of them."""

    def __init__(self, name: str, sock, keep: int = 400):
        self.name, self.sock, self.keep, self.log = name, sock, keep, []
        trace = self

        class Shadow:           # stands in for the socket's _shadow_sock, which pyzmq uses for every real call
            def __init__(self, real):
                self._real = real

            def __getattr__(self, attr):
                return getattr(self._real, attr)

            def get(self, opt):
                before = trace.readable()
                value = self._real.get(opt)
                if opt == zmq.EVENTS:
                    trace.note("EVENTS", before, pollin=bool(value & zmq.POLLIN))
                return value

            def recv_multipart(self, *a, **kw):
                before = trace.readable()
                try:
                    msg = self._real.recv_multipart(*a, **kw)
                except zmq.Again:
                    trace.note("recv EAGAIN", before)
                    raise
                trace.note("recv", before, frames=len(msg))
                return msg

            def send_multipart(self, *a, **kw):
                before = trace.readable()
                out = self._real.send_multipart(*a, **kw)
                trace.note("send", before)
                return out

        sock._shadow_sock = Shadow(sock._shadow_sock)
        handle_events = sock._handle_events

        def traced_handle_events(fd=0, events=0):
            trace.note("loop wakes reader", trace.readable())
            return handle_events(fd, events)
        sock._handle_events = traced_handle_events
        add_recv = sock._add_recv_event

        def traced_add_recv(kind, **kw):
            trace.note(f"wait for {kind}", trace.readable())
            return add_recv(kind, **kw)
        sock._add_recv_event = traced_add_recv

    def wrap_channel_send(self, channel):
        """jupyter_client's Session.send writes through a plain zmq.Socket shadowing the asyncio one, past pyzmq's
        asyncio bookkeeping: noted here."""
        send = channel.send
        trace = self

        def traced_send(msg):
            before = trace.readable()
            send(msg)
            trace.note(f"Session.send {msg.get('header', {}).get('msg_type')} via sync shadow", before)
        channel.send = traced_send

    def readable(self) -> bool:
        return bool(select.select([self.sock._fd], [], [], 0)[0])

    def note(self, what: str, fd_readable_before: bool, **kw):
        after = self.readable()
        self.log.append((round(time.monotonic(), 4), what, int(fd_readable_before), int(after), kw or ""))
        del self.log[:-self.keep]


SOCKET_TRACES: dict[int, SocketTrace] = {}


def trace_zmq_poll():
    """zmq_poll as called by pyzmq's asyncio Poller when a poll's watcher fires (its timer or a socket event)."""
    from zmq.sugar.poll import Poller
    poll = Poller.poll

    def traced(self, timeout=None):
        socks = [SOCKET_TRACES.get(id(s)) for s, _ in self.sockets]
        before = [t.readable() if t else None for t in socks]
        result = poll(self, timeout)
        for t, b in zip(socks, before):
            if t is not None:
                t.note(f"zmq_poll({timeout})", b, ready=bool(result))
        return result
    Poller.poll = traced


def stamp(msg: dict) -> float:
    date = msg["header"].get("date")
    return date.timestamp() if hasattr(date, "timestamp") else float("nan")


class Client(nbclient.NotebookClient):
    """NotebookClient with per-cell timing and a watchdog that looks at the sockets of a cell that waits long."""

    def __init__(self, nb, *, mode: str, probe_after: float, dump_dir: Path, tag: str, zmq_trace: bool, **kw):
        super().__init__(nb, on_cell_execute=self._cell_start, on_cell_executed=self._cell_done,
                         on_notebook_start=self._trace_sockets if zmq_trace else None, **kw)
        self.traces: dict[str, SocketTrace] = {}
        self.factory = kernel_client_class(mode)
        self.probe_after, self.dump_dir, self.tag = probe_after, dump_dir, tag
        self.cells: list[dict] = []
        self.current: dict | None = None
        self.watchdog: asyncio.Task | None = None

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        km.client_factory = self.factory
        return km

    def _trace_sockets(self, notebook):
        SOCKET_TRACES.clear()
        for name in ("shell", "iopub"):
            sock = getattr(self.kc, f"{name}_channel").socket
            self.traces[name] = SOCKET_TRACES[id(sock)] = SocketTrace(name, sock)
        self.traces["shell"].wrap_channel_send(self.kc.shell_channel)

    def _cell_start(self, cell, cell_index):
        self.current = {"cell": cell_index, "t0": time.monotonic(), "n_trace": len(TRACE)}
        if self.watchdog is None:
            self.watchdog = asyncio.ensure_future(self._watch())

    def _cell_done(self, cell, cell_index, execute_reply):
        cur, self.current = self.current, None
        msg_id = execute_reply["parent_header"].get("msg_id")
        rec = {"cell": cell_index, "status": execute_reply["content"].get("status")}
        for name, mono, wall, msg in TRACE[cur["n_trace"]:]:
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if name == "shell" and msg["msg_type"] == "execute_reply":
                rec["wait"] = round(mono - cur["t0"], 3)
                rec["late"] = round(wall - stamp(msg), 3)
            if name == "iopub" and msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                rec["idle_wait"] = round(mono - cur["t0"], 3)
                rec["idle_late"] = round(wall - stamp(msg), 3)
        if "probes" in cur:
            rec["probes"] = cur["probes"]
        if self.traces and rec.get("late", 0) > 2.0:    # a reply that sat in the socket: how it got there
            rec["zmq_trace"] = {n: [e for e in t.log if e[0] >= cur["t0"] - 1] for n, t in self.traces.items()}
            rec["t0"] = round(cur["t0"], 4)
        self.cells.append(rec)

    async def _watch(self):
        while True:
            await asyncio.sleep(1)
            cur = self.current
            if cur is None or self.kc is None:
                continue
            waited = time.monotonic() - cur["t0"]
            if waited >= cur.get("next_probe", self.probe_after):
                cur["next_probe"] = waited + 60
                cur.setdefault("probes", []).append(self._probe(cur, waited, first=len(cur.get("probes", [])) == 0))

    def _probe(self, cur: dict, waited: float, first: bool) -> dict:
        seen = [(n, m["msg_type"], m["content"].get("execution_state")) for n, _, _, m in TRACE[cur["n_trace"]:]]
        out = {"waited": round(waited, 1), "seen_since_request": seen[-6:], "n_seen": len(seen)}
        for name in ("shell", "iopub"):
            sock = getattr(self.kc, f"{name}_channel").socket
            readable = bool(select.select([sock._fd], [], [], 0)[0])
            info = {"fd_readable": readable, "watching_pollin": bool(sock._state & zmq.POLLIN),
                    "waiting": [e.kind for e in sock._recv_futures if not e.future.done()]}
            if not readable:    # ZMQ_EVENTS drains the FD: only read it when the loop has nothing to be woken for
                info["zmq_pollin"] = bool(sock._shadow_sock.get(zmq.EVENTS) & zmq.POLLIN)
            out[name] = info
        loop = asyncio.get_running_loop()
        try:                    # is each socket's FD in the loop's epoll set (the kernel's view) and in its map?
            epfd = loop._selector._selector.fileno()
            tfds = {int(line.split()[1]) for line in Path(f"/proc/self/fdinfo/{epfd}").read_text().splitlines()
                    if line.startswith("tfd:")}
            for name in ("shell", "iopub"):
                fd = getattr(self.kc, f"{name}_channel").socket._fd
                out[name]["in_epoll"] = fd in tfds
                out[name]["in_selector"] = fd in loop._selector.get_map()
        except (AttributeError, OSError) as e:
            out["epoll"] = repr(e)
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if first and os.path.exists(spy):
            kernel = self.km.provisioner.process.pid if self.km and self.km.provisioner else None
            for who, pid in (("client", os.getpid()), ("kernel", kernel)):
                if pid:
                    dump = self.dump_dir / f"{self.tag}_cell{cur['cell']}_{who}.txt"
                    # after a moment, so that the client's loop is back in its select when it is sampled
                    subprocess.Popen(f"sleep 0.5; {spy} dump --pid {pid} > {dump} 2>&1", shell=True)
                    out[f"{who}_dump"] = str(dump)
        print(f"    probe {self.tag} cell {cur['cell']}: {json.dumps(out)}", flush=True)
        return out


def run_one(name: str, mode: str, timeout: int, probe_after: float, dump_dir: Path, tag: str,
            zmq_trace: bool) -> dict:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    env = {"OPENBLAS_NUM_THREADS": "1", **os.environ}
    TRACE.clear()
    RESCUES.clear()
    client = Client(nb, mode=mode, probe_after=probe_after, dump_dir=dump_dir, tag=tag, zmq_trace=zmq_trace,
                    timeout=timeout,
                    kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.monotonic()
    error = None
    try:
        client.execute(env=env)
    except Exception as e:          # noqa: BLE001  recorded, the loop goes on
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        if client.watchdog is not None:
            client.watchdog.cancel()
    seconds = time.monotonic() - t0
    waits = [c for c in client.cells if "wait" in c]
    worst = max(waits, key=lambda c: c["wait"], default={})
    latest = max(waits, key=lambda c: c["late"], default={})
    return {"name": name, "seconds": round(seconds, 1), "cells": client.cells, "error": error,
            "max_wait": worst.get("wait"), "max_wait_cell": worst.get("cell"),
            "max_late": latest.get("late"), "max_late_cell": latest.get("cell"),
            "stalls": [c for c in waits if c["late"] > 2.0], "late_over_50ms": sum(c["late"] > 0.05 for c in waits),
            "rescued_by_recheck": list(RESCUES)}


async def mechanism(channel_class: type, timeout: float = 5.0, send: bool = True) -> float:
    """The stall without a notebook: a client channel awaits a reply; the reply arrives while the event loop is busy,
    and in that turn the client sends on the same socket (as nbclient's Output-widget mimic does). Returns how long
    get_msg then takes to hand over a reply that is already in the socket."""
    from jupyter_client.session import Session
    session = Session(key=b"")
    router = zmq.Context.instance().socket(zmq.ROUTER)                  # the kernel's shell socket
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)          # the client's
    dealer.connect(f"tcp://127.0.0.1:{port}")
    channel = channel_class(dealer, session)
    try:
        channel.send(session.msg("execute_request", content={}))
        idents, request = session.feed_identities(router.recv_multipart())
        waiting = asyncio.ensure_future(channel.get_msg(timeout=timeout))
        await asyncio.sleep(0.2)                                         # the poll is registered and waits
        session.send(router, "execute_reply", content={"status": "ok"}, parent=session.deserialize(request),
                     ident=idents)
        time.sleep(0.1)             # the loop is busy (handling iopub, say) while the reply arrives; then, same turn:
        if send:
            channel.send(session.msg("comm_msg", content={"data": {"method": "update"}}))
        t0 = time.monotonic()
        await waiting
        return time.monotonic() - t0
    finally:
        dealer.close(linger=0)
        router.close(linger=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--client", choices=["nbclient", "sliced", "fixed"], default="fixed",
                    help="nbclient: as it ships; sliced: polls of at most 0.5 s only; fixed: tests/notebook_client.py "
                         "(re-check after each send, and the sliced polls)")
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("MINIQWEN3_NOTEBOOK_TIMEOUT", 300)))
    ap.add_argument("--probe-after", type=float, default=30.0,
                    help="seconds a cell waits before its sockets are probed")
    ap.add_argument("--zmq-trace", action="store_true",
                    help="log pyzmq's calls on the shell and iopub sockets; kept for replies that came late")
    ap.add_argument("--log", type=Path, default=Path("/tmp/notebook_stall.jsonl"))
    ap.add_argument("--mechanism", action="store_true",
                    help="only the two-socket reproduction of the stall, with each client's channel, 3 times each")
    ap.add_argument("names", nargs="*", help="notebooks (stems); all by default")
    args = ap.parse_args()
    if args.mechanism:
        for label, cls, send in (("nbclient, no send in that turn", AsyncZMQSocketChannel, False),
                                 ("nbclient", AsyncZMQSocketChannel, True), ("sliced", SlicedOnly, True),
                                 ("fixed", notebook_client.Channel, True)):
            waits = [asyncio.run(mechanism(cls, send=send)) for _ in range(3)]
            print(f"{label:30s} reply already in the socket, handed over after: "
                  + ", ".join(f"{w:.3f} s" for w in waits), flush=True)
        return
    if args.zmq_trace:
        trace_zmq_poll()
    names = args.names or sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    dump_dir = args.log.with_suffix("")
    dump_dir.mkdir(parents=True, exist_ok=True)
    import ipykernel
    import jupyter_client
    print(f"client={args.client} nbclient {nbclient.__version__} jupyter_client {jupyter_client.__version__} "
          f"ipykernel {ipykernel.__version__} pyzmq {zmq.__version__} libzmq {zmq.zmq_version()} "
          f"timeout {args.timeout} s, log {args.log}", flush=True)
    table = []
    for run in range(1, args.runs + 1):
        t_run = time.monotonic()
        results = []
        for name in names:
            r = run_one(name, args.client, args.timeout, args.probe_after, dump_dir, f"run{run}_{name}",
                       args.zmq_trace)
            r.update(run=run, client=args.client, time=time.strftime("%H:%M:%S"))
            with args.log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            results.append(r)
            stall = f"  STALL {[(c['cell'], c['wait'], c['late']) for c in r['stalls']]}" if r["stalls"] else ""
            print(f"  run {run} {name}: {r['seconds']:.1f} s, longest reply wait {r['max_wait']} s (cell "
                  f"{r['max_wait_cell']}), latest reply {r['max_late']} s, late >50 ms {r['late_over_50ms']}, "
                  f"rescued {len(r['rescued_by_recheck'])}{stall}{'  ' + r['error'] if r['error'] else ''}",
                  flush=True)
        total = time.monotonic() - t_run
        longest = max((r["max_wait"] or 0) for r in results)
        n_stalls = sum(len(r["stalls"]) for r in results)
        errors = sum(r["error"] is not None for r in results)
        table.append((run, total, longest, n_stalls, errors, sum(len(r["rescued_by_recheck"]) for r in results),
                      sum(r["late_over_50ms"] for r in results)))
        print(f"run {run}: {total:.1f} s, longest single-cell wait {longest:.2f} s, stalled replies {n_stalls}, "
              f"errors {errors}", flush=True)
    print("\nrun  total_s  longest_wait_s  stalled_replies  errors  rescued  late_over_50ms")
    for run, total, longest, n_stalls, errors, rescued, late in table:
        print(f"{run:3d}  {total:7.1f}  {longest:14.2f}  {n_stalls:15d}  {errors:6d}  {rescued:7d}  {late:14d}")


if __name__ == "__main__":
    main()
