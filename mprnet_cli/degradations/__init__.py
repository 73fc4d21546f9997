"""Synthetic degradations shared by training (`synthesis`) and `mprnet eval --degrade`
(`benchmark`, fixed and seeded per image)."""
