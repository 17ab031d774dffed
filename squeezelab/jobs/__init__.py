"""Jobs: what a command does from start to end, composed from the engine and the layers below it
(``demo``: the README's main job; ``transfer``: transfer learning; ``compress``: Deep Compression
with retraining). Nothing below this package imports it."""
