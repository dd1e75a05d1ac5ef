"""Fault injection over real ``tide serve`` processes, Jepsen-style (``python -m tidekv.chaos``).

Pure parts (unit-tested, no I/O): :mod:`~tidekv.chaos.schedule` (faults from a seed),
:mod:`~tidekv.chaos.history` (outcomes, conversion for the checker),
:mod:`~tidekv.chaos.verify` (lost writes, convergence, HLC order),
:mod:`~tidekv.chaos.report` (metrics and the Markdown). The rest does I/O:
:mod:`~tidekv.chaos.net` (namespaces, nftables, netem), :mod:`~tidekv.chaos.cluster`
(processes, skewed clocks, tmpfs disks), :mod:`~tidekv.chaos.workload` (the HTTP
clients), :mod:`~tidekv.chaos.nemesis` (applies and heals faults),
:mod:`~tidekv.chaos.runner` (one run), :mod:`~tidekv.chaos.plot` (the PNG).
"""
