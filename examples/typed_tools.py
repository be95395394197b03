"""Typed tool parameters against the built-in mock LLM: a pydantic model (with a nested
model), an ``Annotated[int, Field(ge=1)]`` and a dataclass as tool parameters. The model is
shown their full JSON schema; arguments that do not fit never reach the function, the model
gets a structured ``invalid_arguments`` error back and tries again. Everything runs in this
process, over real HTTP.

python examples/typed_tools.py
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import trio
from pydantic import BaseModel, Field

import agentflow_trio as af
from agentflow_trio.config import LLMConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.mockllm import MockReply, MockToolCall, open_mock_llm
from agentflow_trio.tools import ToolRegistry, tool_agent

ANSWER = "Ordered 2 boxes of tea to Oslo, delivered on Monday at 9."


class Address(BaseModel):
    street: str
    city: str


class Order(BaseModel):
    item: str
    ship_to: Address


@dataclasses.dataclass
class Slot:
    day: str
    hour: int

    def __post_init__(self) -> None:
        if not 0 <= self.hour <= 23:
            raise ValueError("hour must be between 0 and 23")


@af.tool
async def place_order(order: Order, quantity: Annotated[int, Field(ge=1)]) -> dict[str, Any]:
    """Place an order.

    Args:
        order: What to send and where.
        quantity: How many.
    """
    # Real instances arrive: order.ship_to is an Address, quantity is at least 1.
    return {"item": order.item, "city": order.ship_to.city, "quantity": quantity}


@af.tool
def book_delivery(slot: Slot) -> dict[str, Any]:
    """Book a delivery slot."""
    return {"booked": f"{slot.day} {slot.hour}:00"}


async def main() -> None:
    tools = ToolRegistry([place_order, book_delivery])
    agent = tool_agent(tools=tools, system="Place orders with the tools.")
    order = {"item": "tea", "ship_to": {"street": "1 Main St", "city": "Oslo"}}

    async with open_mock_llm() as mock:
        # The mock plays the model: a quantity of 0 first (refused before the function
        # runs), then a valid order and a delivery slot, then the answer.
        mock.script(
            MockReply(tool_calls=(MockToolCall("place_order", {"order": order, "quantity": 0}),)),
            MockReply(
                tool_calls=(
                    MockToolCall("place_order", {"order": order, "quantity": 2}),
                    MockToolCall("book_delivery", {"slot": {"day": "Monday", "hour": 9}}),
                )
            ),
            MockReply(text=ANSWER),
        )
        config = LLMConfig(provider="openai", base_url=mock.url + "/v1", api_key="sk-mock")
        async with (
            open_provider(config) as provider,
            af.Runner(agents={"shop": agent}, llm=LLMClient(provider), tools=tools) as runner,
        ):
            result = await runner.call(af.Event("shop", {"query": "Two boxes of tea to Oslo"}))

    # The JSON schema the model was shown for each tool's parameters.
    shown = {t["function"]["name"]: t["function"]["parameters"] for t in mock.received[0]["tools"]}
    params = shown["place_order"]["properties"]
    print("schema quantity:", json.dumps(params["quantity"]))
    print("schema ship_to: ", json.dumps(params["order"]["properties"]["ship_to"]["required"]))
    print("schema slot:    ", json.dumps(shown["book_delivery"]["properties"]["slot"]))

    # What the model read back after its first call: a structured error, not a traceback.
    (refused,) = [m for m in mock.received[1]["messages"] if m["role"] == "tool"]
    print("invalid_arguments:", json.dumps(json.loads(refused["content"])["error"]))
    for r in result.output["tool_results"]:
        print(f"tool {r.name}: {r.outcome} {r.content()}")

    print("outcome:", result.outcome.value)
    print("answer:", result.output["text"])


if __name__ == "__main__":
    trio.run(main)
