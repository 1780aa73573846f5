"""nbclient's NotebookClient, with kernel channels that cannot sleep through a message that has already arrived.

What it fixes (measured with scripts/notebook_stall.py, see tests/test_notebooks.py): while nbclient waits for a
cell's execute_reply with one `await socket.poll(timeout)` on the shell socket, its Output-widget mimic
(nbclient/output_widget.py) answers the kernel's `clear_output` with a `comm_msg` sent on that same shell socket.
jupyter_client's Session.send writes through a plain `zmq.Socket.shadow` of the zmq.asyncio socket, past pyzmq's
asyncio bookkeeping. If the execute_reply has arrived since the loop last looked (it was busy with the iopub message)
or arrives during that send, libzmq's send consumes the socket's wakeup (the edge-triggered ZMQ_FD is read while it
processes pending commands): the reply is queued (ZMQ_EVENTS has POLLIN) but the FD is not readable, so the event
loop never wakes the poll, and the reply is read only when the poll's timer fires, at the cell timeout: a stall as
long as the timeout, then the run goes on without an error.

Two changes, in `Channel`:
- send() asks the asyncio socket for ZMQ_EVENTS after writing (`socket.get(zmq.EVENTS)`), which makes pyzmq wake a
  waiting poll when a message is queued: the wakeup the send took is given back (the cause);
- get_msg(timeout) waits in slices of at most `SLICE` seconds, each a fresh poll that ends in a real zmq_poll, so any
  other wakeup lost the same way costs at most a slice; the caller's timeout is kept (`queue.Empty` once it has
  passed, as before).
"""
from queue import Empty
from time import monotonic

import nbclient
import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type, default

SLICE = 0.5     # seconds: the longest a message that has arrived can wait unseen


class Channel(AsyncZMQSocketChannel):
    def send(self, msg: dict) -> None:
        super().send(msg)
        self.socket.get(zmq.EVENTS)     # on a zmq.asyncio socket this reschedules waiting polls if POLLIN is set

    async def get_msg(self, timeout: float | None = None) -> dict:
        """The next message; queue.Empty if none came within `timeout` seconds (None: wait for ever)."""
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = SLICE if deadline is None else min(SLICE, max(0.0, deadline - monotonic()))
            try:
                return await super().get_msg(timeout=left)
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise


class KernelClient(AsyncKernelClient):
    shell_channel_class = Type(Channel)
    iopub_channel_class = Type(Channel)
    stdin_channel_class = Type(Channel)
    control_channel_class = Type(Channel)


class KernelManager(AsyncKernelManager):
    """An AsyncKernelManager that hands out `KernelClient`s. nbconvert can use it too:
    PYTHONPATH=tests jupyter nbconvert --execute --to notebook \
        --ExecutePreprocessor.kernel_manager_class=notebook_client.KernelManager notebooks/03_load_balancing.ipynb"""

    @default("client_factory")
    def _client_factory_default(self) -> type:
        return KernelClient


class NotebookClient(nbclient.NotebookClient):
    """nbclient.NotebookClient with `KernelManager` as its kernel manager."""

    @default("kernel_manager_class")
    def _kernel_manager_class_default(self) -> type:
        return KernelManager
