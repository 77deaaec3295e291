"""monitor — a website availability monitor with truthful outage periods.

Pipeline: config → scheduler → probe → ProbeResult → tracker → Transition → store, metrics,
notifiers. See docs/design.md and README.md.
"""

__version__ = "0.1.0"
