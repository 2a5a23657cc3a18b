"""The web dashboard served by the cluster daemon's admin API: see dashboard.py (routes) and static/ (assets)."""
