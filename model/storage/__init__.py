"""Storage helpers below every other layer of `model` (folders written beside their target
and swapped in), so that both `model.core` and `model.encoders` can use them."""
