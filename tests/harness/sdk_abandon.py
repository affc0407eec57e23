"""Apps that leave asyncio.run with their event stream still open, run in a subprocess by the SDK's shutdown tests.

Run as `python -m tests.harness.sdk_abandon TRANSPORT ROUNDS` with VORA_BASE_URL and VORA_ACCESS_TOKEN set.
Each round is one asyncio.run of an app that opens a stream and returns as soon as it is open, without
closing it (as an app that forgets to does, or a test whose first check failed): the stream is reading
its first frames when asyncio.run cancels it. Where exactly the cancellation meets the stream depends on
when those frames arrive, hence several rounds. It prints each round's end and exits 0 once all returned.
"""

from __future__ import annotations

import asyncio
import os
import sys

from vora_client import State, TransportChoice, VoraClient, connect

from tests.harness.sdk import IDENTITY


async def abandon(transport: TransportChoice) -> State:
    """Open a stream and return once it is open, leaving it open; return the state it was in."""
    token = os.environ["VORA_ACCESS_TOKEN"]

    async def access_token() -> str:
        return token

    async with VoraClient(os.environ["VORA_BASE_URL"], access_token) as client:
        stream = await connect(client, IDENTITY, subscribe_all=True, transport=transport)
        await stream.wait_open(10)
        return stream.state


def main() -> None:
    """Run the rounds, saying after each that asyncio.run returned (a hang never gets there)."""
    transport: TransportChoice = "sse" if sys.argv[1] == "sse" else "websocket"
    for round_ in range(int(sys.argv[2])):
        state = asyncio.run(abandon(transport))
        print(f"round {round_}: asyncio.run returned, the stream left {state.value}", flush=True)


if __name__ == "__main__":
    main()
