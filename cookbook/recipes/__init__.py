"""Runnable recipes (reference training loops). Run ``cookbook run NAME key=value ...`` or
``python -m cookbook.recipes.NAME key=value ...``. Without a Tinker key they use an embedded mock server."""

RECIPES = {
    "sl_basic": "cookbook.recipes.sl_basic",
    "rl_basic": "cookbook.recipes.rl_basic",
}
