"""From decoded pixels to restored pixels: the tile loop on the Backend protocol (`pipeline`),
tile geometry and blending (`tiling`), self-ensemble and strength (`quality`) and the
split-line fix around the tile loop (`splitlines`)."""
