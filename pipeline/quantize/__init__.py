"""Quantize: each target's int8 export in a child process (cached by content hash), recurrent layers unrolled
for export, and the accuracy-aware ladder of int8 variants when the first one misses the budget."""
