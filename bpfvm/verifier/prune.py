"""State pruning at prune points (is_state_visited), loop handling and checkpoint creation.

Loops are explored the kernel's way:
  * ordinary loops are walked iteration by iteration; a path that comes back to a loop head in a state
    exactly equal to an unfinished earlier one is an `infinite loop detected`, and loops that never repeat
    a state end at the 1M processed-instructions limit;
  * at iterator `next` calls, `may_goto` and loop-callback call sites (where the run time bounds the loop),
    a path whose state lies within an earlier state at the same point, finished or not, is pruned
    (RANGE_WITHIN: every scalar compared by its ranges), and imprecise scalars that differ from the previous
    iteration are widened so that the iteration converges.
After such a hit the checkpoints between the earlier state and the pruned path are only ever compared with
RANGE_WITHIN (their precision marks cannot account for the back edge), and the live scalars of both states
are marked precise. Only finished checkpoints prune by plain (NOT_EXACT) equivalence, after which the
precision the old state relied on is propagated to the pruned path's ancestors.
"""

from __future__ import annotations

from .. import isa
from .equiv import EXACT, NOT_EXACT, RANGE_WITHIN, states_equal
from .errors import Reject
from .log import state_str
from .regs import SCALAR, set_unknown
from .state import REG_SIZE, SPILL, State

MAX_HISTORY = 64


class PruneMixin:
    def live_masks(self, st: State, insn: int) -> list[int]:
        """Live-register mask of each frame of a state at `insn` (callers: live at their call site)."""
        live = self.cfg.live
        n = len(st.frames)
        out = [0] * n
        for fi in range(n - 1):
            out[fi] = live[st.frames[fi + 1].callsite]
        out[n - 1] = live[insn]
        return out

    def is_state_visited(self, st: State, insn: int) -> bool:
        lst = self.explored.get(insn)
        if lst is None:
            lst = self.explored[insn] = []
        force = insn in self.cfg.force_checkpoint
        conv = insn in self.convergence_points
        add_new = force or len(st.history) > MAX_HISTORY or (
            self.jmps_processed - self.prev_jmps >= 2 and self.insn_processed - self.prev_insns >= 8)
        live = self.live_masks(st, insn)
        priv = self.opts.privileged
        keep: list[State] = []
        pruned = False
        for k, old in enumerate(lst):
            if len(old.frames) != len(st.frames) or old.instance != st.instance:
                keep.append(old)
                continue
            if old.branches > 0:
                if conv:
                    if self._depth_differs(old, st, insn) and states_equal(old, st, RANGE_WITHIN, live, priv):
                        self._range_hit(old, st, live, incomplete=True)
                        pruned = True
                        keep.append(old)
                        keep.extend(lst[k + 1:])
                        break
                elif old.may_goto_depth == st.may_goto_depth and old.callback_depth == st.callback_depth \
                        and states_equal(old, st, EXACT, live, priv):
                    lines = []
                    if self.log:
                        lines = ["cur state: " + state_str(st, self.log.map_names),
                                 "old state: " + state_str(old, self.log.map_names)]
                    raise Reject(insn, f"infinite loop detected at insn {insn}", *lines)
                # Inside a loop: do not add checkpoints too often (the kernel's heuristic).
                if not force and self.jmps_processed - self.prev_jmps < 20 \
                        and self.insn_processed - self.prev_insns < 100:
                    add_new = False
            else:
                mode = RANGE_WITHIN if old.range_only else NOT_EXACT
                if states_equal(old, st, mode, live, priv):
                    if mode == NOT_EXACT:
                        self.propagate_precision(old, st, live)
                    else:
                        self.mark_live_scalars_precise(st, live)
                    old.hit_cnt += 1
                    pruned = True
                    keep.append(old)
                    keep.extend(lst[k + 1:])
                    break
            if add_new:
                old.miss_cnt += 1
            n = 64 if force and old.branches > 0 else 3
            if old.miss_cnt > old.hit_cnt * n + n:
                self.cur_states -= 1
                continue  # rarely useful: stop comparing against it (a speed heuristic, always sound)
            keep.append(old)
        self.explored[insn] = keep
        if pruned:
            if self.log:
                self.log.line(f"{insn}: safe")
            return True
        if not add_new:
            return False
        self._add_checkpoint(st, insn, keep)
        return False

    def _depth_differs(self, old: State, cur: State, insn: int) -> bool:
        ins = self.insns[insn]
        if ins.opcode == isa.OP_MAY_GOTO:
            return old.may_goto_depth != cur.may_goto_depth
        return True

    def _add_checkpoint(self, st: State, insn: int, lst: list[State]) -> None:
        cp = st.copy()
        cp.insn = insn
        cp.branches = 1
        cp.parent = st.parent
        self.checkpoint_seq += 1
        cp.checkpoint_id = self.checkpoint_seq
        lst.append(cp)
        st.parent = cp
        st.history = []
        st.first_insn = insn
        self.prev_jmps = self.jmps_processed
        self.prev_insns = self.insn_processed
        self.total_states += 1
        self.cur_states += 1
        self.peak_states = max(self.peak_states, self.cur_states)
        if len(lst) > self.max_states_per_insn:
            self.max_states_per_insn = len(lst)

    def _range_hit(self, old: State, st: State, live: list[int], incomplete: bool) -> None:
        if incomplete:
            p = st.parent
            while p is not None and p is not old:
                p.range_only = True
                p = p.parent
            self.mark_live_scalars_precise(old, live, checkpoint=True)
        self.mark_live_scalars_precise(st, live)

    # -- loop helpers ---------------------------------------------------------------------------------------
    def find_prev_entry(self, st: State, insn: int) -> State | None:
        """The nearest checkpoint at `insn` among the path's ancestors with the same frames (the previous
        iteration of a loop)."""
        p = st.parent
        if p is not None and p.insn == insn and not st.history:
            p = p.parent  # skip the checkpoint made for this very visit
        n = len(st.frames)
        while p is not None:
            if p.insn == insn and len(p.frames) == n and all(
                    a.callsite == b.callsite for a, b in zip(p.frames, st.frames)):
                return p
            p = p.parent
        return None

    @staticmethod
    def widen_imprecise(old: State, cur: State) -> None:
        """widen_imprecise_scalars(): imprecise scalars that changed since the previous iteration become
        unknown, so that the next comparison with RANGE_WITHIN can succeed."""
        for fo, fc in zip(old.frames, cur.frames):
            for ro, rc in zip(fo.regs, fc.regs):
                _maybe_widen(ro, rc)
            for so, sc in zip(fo.stack, fc.stack):
                if so.types[REG_SIZE - 1] == SPILL and sc.types[REG_SIZE - 1] == SPILL:
                    _maybe_widen(so.reg, sc.reg)


def _maybe_widen(ro, rc) -> None:
    if ro.type != SCALAR or rc.type != SCALAR or ro.precise or rc.precise:
        return
    if ro.var == rc.var and ro.smin == rc.smin and ro.smax == rc.smax and ro.umin == rc.umin \
            and ro.umax == rc.umax and ro.s32min == rc.s32min and ro.s32max == rc.s32max \
            and ro.u32min == rc.u32min and ro.u32max == rc.u32max:
        return
    set_unknown(rc)
