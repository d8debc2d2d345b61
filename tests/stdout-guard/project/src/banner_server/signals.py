"""A stdio MCP server that watches SIGINT and SIGTERM itself, as many servers do with
anyio's `open_signal_receiver` (asyncio's `loop.add_signal_handler`, which sets its own
`signal.set_wakeup_fd`): the watcher only logs the signal, and the server ends when its
stdio session does. Packed as `signal-server` by tests/stdout-guard (tests/signals.rs)."""

import signal
import sys

import anyio

from banner_server import server


def log(text):
    print(f"signal-server: {text}", file=sys.stderr, flush=True)


async def watch():
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        log("watching signals")
        async for signum in signals:
            log(f"the app's handler got signal {int(signum)}")


async def serve():
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await server.run_stdio_async()
        tg.cancel_scope.cancel()


def main():
    # What a library that sets its own wakeup fd sees first (trio warns unless -1).
    log(f"wakeup fd before the app set one: {signal.set_wakeup_fd(-1)}")
    anyio.run(serve)
