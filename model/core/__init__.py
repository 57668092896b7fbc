"""The model itself: its configuration, the tasks and their decision rules, the network,
text windows, the lexical component and the artifact folder on disk.
"""
