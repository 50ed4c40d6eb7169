"""Results layer: what a sweep folder holds and how to read it without the sweep machinery.

    status.py   where a sweep stands (cell states, FLOPs, ETA, driver heartbeat), from run folders
"""
