"""Tree counters stay monotonic and exact while processes come, go and are reaped."""

from __future__ import annotations

from sidecar_plugins.metrics._process_tree import ABSORBED, FIELDS, Seen, TreeAccount

CPU = FIELDS.index("cpu_user")
CTX = FIELDS.index("ctx_voluntary")
Key = tuple[int, int]


def seen(cpu: float, *, parent: Key | None = None, ctx: float = 0.0) -> Seen:
    """A process with user CPU ``cpu`` (own + reaped children) and ``ctx`` voluntary switches."""
    counts = [0.0] * len(FIELDS)
    counts[CPU] = cpu
    counts[CTX] = ctx
    return Seen(tuple(counts), parent)


ROOT: Key = (100, 1)
CHILD: Key = (101, 2)
GRANDCHILD: Key = (102, 3)


def test_first_scrape_counts_everything_and_growth_after() -> None:
    """A process seen for the first time counts whole; later scrapes add the growth."""
    account = TreeAccount()
    account.update({ROOT: seen(2.0), CHILD: seen(1.0, parent=ROOT)})
    assert account.totals[CPU] == 3.0
    account.update({ROOT: seen(2.5), CHILD: seen(1.25, parent=ROOT)})
    assert account.totals[CPU] == 3.75


def test_child_reaped_by_its_parent_is_not_counted_twice() -> None:
    """The parent's cutime takes the child's final figure; what was counted for it is taken off."""
    account = TreeAccount()
    account.update({ROOT: seen(1.0), CHILD: seen(4.0, parent=ROOT)})
    # the child used 1 s more, exited and was waited for: the root's figure now holds all 5 s
    account.update({ROOT: seen(1.0 + 5.0)})
    assert account.totals[CPU] == 6.0


def test_chain_reaped_into_a_surviving_ancestor() -> None:
    """Child and grandchild both gone, reaped up the chain into the root: counted once."""
    account = TreeAccount()
    account.update(
        {ROOT: seen(1.0), CHILD: seen(2.0, parent=ROOT), GRANDCHILD: seen(3.0, parent=CHILD)}
    )
    account.update({ROOT: seen(1.0 + 2.5 + 3.5)})
    assert account.totals[CPU] == 7.0


def test_restart_of_the_app_keeps_the_counter() -> None:
    """The root exits (its parent is sidecar-run, outside the tree); a new root adds to it."""
    account = TreeAccount()
    account.update({ROOT: seen(3.0)})
    account.update({})
    assert account.totals[CPU] == 3.0
    account.update({(200, 9): seen(0.5)})
    assert account.totals[CPU] == 3.5


def test_reused_pid_is_another_process() -> None:
    """Same pid, later start time: a new process, counted whole; the old one reaped once."""
    account = TreeAccount()
    account.update({ROOT: seen(1.0), CHILD: seen(5.0, parent=ROOT)})
    # 101 used 0.2 s more, exited and was waited for; a new child got pid 101 again
    account.update({ROOT: seen(1.0 + 5.2), (101, 7): seen(0.5, parent=ROOT)})
    assert round(account.totals[CPU], 6) == 6.7


def test_lost_child_never_makes_the_counter_go_down() -> None:
    """A child nobody waited for (SIGCHLD ignored): the counter pauses, never decreases."""
    account = TreeAccount()
    account.update({ROOT: seen(1.0), CHILD: seen(2.0, parent=ROOT)})
    history = [account.totals[CPU]]
    for cpu in (1.5, 2.0, 3.0, 4.0):
        account.update({ROOT: seen(cpu)})
        history.append(account.totals[CPU])
    assert history == sorted(history)
    assert history[-1] == 4.0  # 3.0 counted + 1.0 of later growth (the lost 2.0 were paid back)


def test_context_switches_are_kept_for_exited_processes() -> None:
    """The kernel does not pass context switches to the parent: nothing is taken off."""
    assert not ABSORBED[CTX]
    account = TreeAccount()
    account.update({ROOT: seen(0.0, ctx=10), CHILD: seen(0.0, parent=ROOT, ctx=5)})
    account.update({ROOT: seen(0.0, ctx=12)})
    assert account.totals[CTX] == 17


def test_reap_seen_before_the_parents_figure_balances_out() -> None:
    """A child reaped between two reads of one scrape: the dip is carried, not exported."""
    account = TreeAccount()
    account.update({ROOT: seen(1.0), CHILD: seen(4.0, parent=ROOT)})
    account.update({ROOT: seen(1.0)})  # child gone, the root's cutime not read yet
    assert account.totals[CPU] == 5.0
    account.update({ROOT: seen(1.0 + 4.5)})  # now it shows, with the child's last 0.5 s
    assert account.totals[CPU] == 5.5
