"""Adapters that plug a VRM checkpoint into the RL libraries people run (TRL; OpenRLHF through ``vrm serve``)."""
