"""Handler modules that the cold-start benchmark compares the Stratus handlers with.

Keep this file free of imports: its own import cost is part of every baseline.
"""
