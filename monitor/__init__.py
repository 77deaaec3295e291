"""monitor — a website availability monitor with truthful outage periods.

Pipeline: config → scheduler → probe → ProbeResult → tracker → Transition → store, metrics,
notifiers. See DESIGN.md in the team's shared folder and README.md.
"""

__version__ = "0.1.0"
