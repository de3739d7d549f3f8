"""Packs of trials (`sweep.pack`): up to K Tune trials that share the base model train in one
Ray Train run (ecomtrain.train.pack); Tune, W&B and the report see K ordinary trials.

    Tune trial ──join──► PackBoard (one actor per sweep) ──starts──► PackRunner: fit_pack
        ▲                     │   ▲                                      │ (its Ray Train run)
        └──take: its reports──┘   └────── PackReports: each report ──────┘

Each trial joins the sweep's board with its config. The board groups the trials by
`pack_key` (trials that cannot share a run are packed apart) and starts a pack when K have
joined, when every trial the sweep will run has joined, or when none has joined the group for
`sweep.pack_wait_s`. The pack's run goes on in an actor of its own (the driver of its Ray
Train run) that the board owns, so a trial stopped early takes nothing with it. Every report
of the run is split by member and queued for the member's trial, which reports it to Tune
from its own thread (tuning.relay's rule); the run's end ends every member still in it and
its failure fails them. When a trial ends early (ASHA stopped it) the driver's `PackLeaves`
tells the board, which rank 0 of the run asks as often as it may report: the member leaves
the pack at the next step and the others go on unchanged. A member whose loss turns
non-finite leaves it too, and its trial fails with the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

import ray
from ray import tune

from ecomtrain.config import Config
from ecomtrain.train.driver import fit_pack
from ecomtrain.train.pack import pack_key
from ecomtrain.train.trial import Prepared, TrialMeta
from tuning.relay import PackReports

TICK_S = 0.2  # how often the board looks for packs whose wait is over


@dataclasses.dataclass
class Waiting:
    members: list  # (id, payload) in the order they joined
    last: float  # when the latest joined


class Packer:
    """Which joined trials train together: grouped by key, a group starts when it holds
    `size` trials, when `expected` trials have joined in all (no more can come), or
    `wait_s` after its latest trial joined."""

    def __init__(self, size: int, wait_s: float, expected: int | None = None):
        self.size, self.wait_s, self.expected = size, wait_s, expected
        self.groups: dict[str, Waiting] = {}
        self.joined = 0

    def join(self, key: str, member_id: str, payload, now: float) -> list[list]:
        """Add a trial; returns the packs to start now ([(id, payload), ...] each)."""
        self.joined += 1
        group = self.groups.setdefault(key, Waiting([], now))
        group.members.append((member_id, payload))
        group.last = now
        ready = [self.groups.pop(key).members] if len(group.members) >= self.size else []
        return ready + self.due(now)

    def due(self, now: float) -> list[list]:
        """The groups that start now without being full."""
        everyone = self.expected is not None and self.joined >= self.expected
        keys = [k for k, g in self.groups.items() if everyone or now - g.last >= self.wait_s]
        return [self.groups.pop(k).members for k in keys]

    def drop(self, member_id: str) -> None:
        """A trial that ended before its pack started."""
        for key, group in list(self.groups.items()):
            group.members = [m for m in group.members if m[0] != member_id]
            if not group.members:
                del self.groups[key]


def pack_name(ids: list[str]) -> str:
    """A pack's Ray Train run: `pack-` and its trials' ids (ecomtrain.train.pack reads
    members' checkpoints of `pack-*` runs back on a resumed sweep)."""
    return "pack-" + "+".join(ids)


@ray.remote(num_cpus=0)
class PackRunner:
    """The driver of one pack's Ray Train run."""

    def fit(self, name, members, storage_path, prepared, board) -> None:
        fit_pack(members, name, storage_path, [PackReports(board, name)], prepared, board)


@ray.remote(num_cpus=0)
class PackBoard:
    """The sweep's packs: trials join, packs start (a PackRunner each), reports are queued
    per trial until it takes them, and trials that ended early are told to their run."""

    def __init__(
        self,
        size: int,
        wait_s: float,
        expected: int | None,
        storage_path: str,
        prepared: Prepared,
        resources: dict,
    ):
        self.packer = Packer(size, wait_s, expected)
        self.storage_path, self.prepared, self.resources = storage_path, prepared, resources
        self.inbox: dict[str, list] = {}  # trial id -> items it has not taken
        self.ready: dict[str, asyncio.Event] = {}
        self.member: dict[str, tuple[str, str]] = {}  # trial id -> (pack, trial name)
        self.gone: dict[str, set[str]] = {}  # pack -> trial names that left it
        self.tasks: set = set()
        self.ticker = None

    async def join(self, trial_id: str, cfg: Config, meta: TrialMeta) -> None:
        self.inbox[trial_id], self.ready[trial_id] = [], asyncio.Event()
        if self.ticker is None:
            self.ticker = asyncio.get_running_loop().create_task(self.tick())
        for members in self.packer.join(pack_key(cfg), trial_id, (cfg, meta), time.time()):
            self.start(members)

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for members in self.packer.due(time.time()):
                self.start(members)

    def start(self, members: list) -> None:
        name = pack_name([trial_id for trial_id, _ in members])
        for trial_id, (_, meta) in members:
            self.member[trial_id] = (name, meta.name)
        self.gone[name] = set()
        runner = PackRunner.options(resources=self.resources).remote()
        board = ray.get_runtime_context().current_actor
        configs = [payload for _, payload in members]
        done = runner.fit.remote(name, configs, self.storage_path, self.prepared, board)
        task = asyncio.get_running_loop().create_task(self.watch(name, runner, done))
        self.tasks.add(task)  # held until it ends
        task.add_done_callback(self.tasks.discard)

    async def watch(self, name: str, runner, done) -> None:
        """The run's end ends its members still in it; its failure fails them."""
        try:
            await done
            item = ("end", None)
        except Exception as e:  # the run failed beyond train.max_failures, or never started
            item = ("error", f"pack {name}: {type(e).__name__}: {e}")
        ray.kill(runner)
        for trial_id, (pack, member) in list(self.member.items()):
            if pack == name and member not in self.gone[name]:
                self.put(trial_id, item)

    async def report(self, pack: str, items: dict[str, list]) -> None:
        """A run's report, split by member (trial name -> items)."""
        for trial_id, (name, member) in list(self.member.items()):
            if name == pack and member in items:
                for item in items[member]:
                    self.put(trial_id, item)
                if any(kind == "failed" for kind, _ in items[member]):
                    self.gone[pack].add(member)

    def put(self, trial_id: str, item) -> None:
        if trial_id in self.inbox:
            self.inbox[trial_id].append(item)
            self.ready[trial_id].set()

    async def take(self, trial_id: str, timeout: float) -> list:
        """The items queued for a trial, waiting up to `timeout` s for one."""
        if trial_id not in self.inbox:  # it left
            return []
        if not self.inbox[trial_id]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready[trial_id].wait(), timeout)
        items = self.inbox.get(trial_id, [])
        if trial_id in self.inbox:
            self.inbox[trial_id] = []
            self.ready[trial_id].clear()
        return items

    async def leave(self, trial_id: str) -> None:
        """A trial ended (stopped, failed or done): its run drops it, if it still trains."""
        self.packer.drop(trial_id)
        self.inbox.pop(trial_id, None)
        self.ready.pop(trial_id, None)
        if trial_id in self.member:
            pack, member = self.member[trial_id]
            self.gone[pack].add(member)

    async def left(self, pack: str) -> list[str]:
        """The members of `pack` whose trials ended (asked by the run's rank 0)."""
        return sorted(self.gone.get(pack, ()))


def board_name(cfg: Config) -> str:
    return f"ecomtrain-packs-{cfg.sweep.name}"


def start_board(cfg: Config, storage_path: str, prepared: Prepared, expected: int | None):
    """The sweep's pack board (named, so trials and callbacks find it: `board_name`),
    with the sweep's driver resources, as every trial's driver has. `expected`: the trials
    the sweep will run (None when unknown, as on a resumed sweep)."""
    resources = dict(cfg.sweep.driver_resources)
    return PackBoard.options(name=board_name(cfg), resources=resources).remote(
        cfg.sweep.pack, cfg.sweep.pack_wait_s, expected, storage_path, prepared, resources
    )


class PackMemberFailed(FloatingPointError):
    """A packed trial's loss turned non-finite: it left its pack, which went on."""


def join_pack(cfg: Config, run_cfg: Config, meta: TrialMeta) -> None:
    """A packed trial: join the sweep's board, then report each of the pack's reports for
    this trial to Tune, from this thread, until its run ends (or fails it)."""
    board = ray.get_actor(board_name(cfg))
    trial_id = tune.get_context().get_trial_id()
    ray.get(board.join.remote(trial_id, run_cfg, meta))
    while True:
        for kind, payload in ray.get(board.take.remote(trial_id, 1.0)):
            if kind == "report":
                tune.report(payload)
            elif kind == "failed":
                raise PackMemberFailed(payload)
            elif kind == "error":
                raise RuntimeError(payload)
            else:
                return


class PackLeaves(tune.Callback):
    """On the driver: tells the sweep's pack board when a trial ends, so a trial Tune stopped
    (ASHA) or that failed leaves its pack's run."""

    def __init__(self, name: str):
        self.name = name

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.leave(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.leave(trial)

    def leave(self, trial) -> None:
        try:
            board = ray.get_actor(self.name)
        except ValueError:  # no board: the sweep packs nothing, or has ended
            return
        board.leave.remote(trial.trial_id)
