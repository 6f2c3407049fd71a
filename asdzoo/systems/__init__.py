"""One module per system; systems compose pieces and nothing below imports them."""
