"""One-off studies (floor 6): experiments run once to choose a recipe, kept so they can be rerun."""
