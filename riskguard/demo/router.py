"""The simulated trading system's order router, as ``docs/gate.md`` asks a router to be.

* Before every order it asks the gate's pre-trade :meth:`~riskguard.gate.Gate.check`
  (keys, side, quantity, limit price and venue); a refused order is never sent. Each
  call is timed, and each decision is stamped with the wall clock right after the
  answer, so the demo can tell, without racing the clock, whether any order was sent
  after the gate had read a halt (the gate stamps ``seen_ns`` after reading it; a check
  that runs later is refused).
* It registers :meth:`Router.on_cancel`: for each cancel request it cancels the orders
  riskguard named and, for a halt, the orders of the halted scope that it still has
  working and riskguard did not name (sent while the halt was being decided and
  published: riskguard had not read them yet). The simulated venue confirms each cancel
  at once; the confirmations are real ``cancel`` events on riskguard's input topic.

Stepping the simulation and cancelling share one lock, so a cancel is never sent
ahead of the ``new`` of its order.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from riskguard import events as wire
from riskguard.demo.scenario import Ticket, TradingSim
from riskguard.gate import CancelRequest, Gate, Verdict

#: sends events to riskguard's input topic, in order
Send = Callable[[Sequence[wire.Event]], Awaitable[None]]


@dataclass
class Handled:
    """One part of a cancel request, as the router carried it out.

    ``received_ns``: when ``on_cancel`` was called (wall clock, ns). ``named``: the ids
    riskguard named; ``unnamed``: the router's own working orders of the scope that
    riskguard did not name (halts only); ``too_late``: ids that had already closed
    (filled) when the cancel reached the venue; ``cancelled``: cancels the venue
    confirmed, at ``done_ns``.
    """

    request: CancelRequest
    received_ns: int
    named: list[str]
    unnamed: list[str] = field(default_factory=list)
    too_late: list[str] = field(default_factory=list)
    cancelled: int = 0
    done_ns: int = 0


@dataclass
class Router:
    """Asks the gate before every order (:meth:`check`, the simulator's ``gate``) and
    cancels what riskguard asks (:meth:`on_cancel`, the gate's ``on_cancel``).

    ``gate`` is set once the :class:`~riskguard.gate.Gate` exists (it needs
    ``on_cancel``). ``decisions`` holds (wall ns after the answer, strategy, allowed)
    for every check; ``check_ns`` the duration of each call of ``check`` (ns);
    ``refused`` the refusals by :attr:`Verdict.cause`; ``handled`` the cancel requests
    by halt id; ``last_refusal`` the latest refused ticket and its verdict;
    ``on_refusal`` (optional) is told of each refusal (ticket, verdict, wall ns).
    """

    sim: TradingSim
    send: Send
    lock: asyncio.Lock
    gate: Gate | None = None
    decisions: list[tuple[int, str, bool]] = field(default_factory=list)
    check_ns: list[int] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    last_refusal: tuple[Ticket, Verdict] | None = None
    handled: dict[str, list[Handled]] = field(default_factory=dict)
    on_refusal: Callable[[Ticket, Verdict, int], None] | None = None

    def check(self, ticket: Ticket) -> bool:
        """The pre-trade question for one order: True sends it."""
        assert self.gate is not None, "the router's gate is not started"
        started = time.perf_counter_ns()
        verdict = self.gate.check(
            ticket.account,
            ticket.strategy,
            ticket.symbol,
            ticket.side,
            ticket.qty,
            ticket.price,
            venue=ticket.venue,
        )
        self.check_ns.append(time.perf_counter_ns() - started)
        self.decisions.append((time.time_ns(), ticket.strategy, verdict.allowed))
        if not verdict:
            self.refused[verdict.cause] += 1
            self.last_refusal = (ticket, verdict)
            if self.on_refusal is not None:
                self.on_refusal(ticket, verdict, self.decisions[-1][0])
        return verdict.allowed

    async def on_cancel(self, request: CancelRequest) -> None:
        """Cancel what riskguard asks: its named orders and, for a halt, every order of
        the scope still working here; ``disconnect``: everything working."""
        received = time.time_ns()
        named = [o.order_id for o in request.orders]
        handled = Handled(request, received, named)
        self.handled.setdefault(request.halt_id, []).append(handled)
        async with self.lock:
            book = self.sim.book
            if request.kind == "disconnect":
                handled.unnamed = [life.order.order_id for life in book.working("firm")]
            elif request.kind == "halt":
                asked = set(named)
                handled.unnamed = [
                    life.order.order_id
                    for life in book.working(request.scope)
                    if life.order.order_id not in asked
                ]
            now = time.time_ns()
            confirmed, handled.too_late = self.sim.cancel([*named, *handled.unnamed], now)
            handled.cancelled, handled.done_ns = len(confirmed), now
            await self.send(confirmed)

    def parts(self, halt_id: str) -> list[Handled]:
        """The parts of one halt's cancel request handled so far."""
        return self.handled.get(halt_id, [])
