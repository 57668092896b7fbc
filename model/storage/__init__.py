"""Storage helpers below every other layer of `model`, so that both `model.core` and
`model.encoders` can use them: folders written beside their target and swapped in, and
file hashes."""
