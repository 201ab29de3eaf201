"""Pure rule sets: no AWS calls, no I/O beyond the data files shipped beside them."""
