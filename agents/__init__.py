"""Policies that plug into the SOTOPIA environment, the conversation formatter, judges and the runner."""
import os as _os

# Importing litellm otherwise fetches its model cost map from the network.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
