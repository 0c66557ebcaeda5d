"""mailbridge: marketplace seller mailbox <-> support team bridge."""
__version__ = "0.1.0"
