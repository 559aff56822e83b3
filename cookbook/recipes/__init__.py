"""Runnable recipes (reference training loops). Run ``cookbook run NAME key=value ...`` or
``python -m cookbook.recipes.NAME key=value ...``. Without a Tinker key they use an embedded mock server."""

RECIPES = {
    "sl_basic": "cookbook.recipes.sl_basic",
    "rl_basic": "cookbook.recipes.rl_basic",
    "chat_sl": "cookbook.recipes.chat_sl",
    "math_rl": "cookbook.recipes.math_rl",
    "dpo": "cookbook.recipes.dpo",
    "distillation": "cookbook.recipes.distillation",
    "tool_use_rl": "cookbook.recipes.tool_use_rl",
}
