"""Starts a server at import, like demo scripts some distributions ship: `--pykiln
verify` must report it as hanging on import and go on."""

import asyncio


async def _serve():
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    async with server:
        await server.serve_forever()


asyncio.run(_serve())
