"""The run layer: one experiment from its composed config to results on disk.

``setup`` turns the config into checked objects (the last reader of the config), ``measurement``
gets each batch's ``(operator, y)``, ``batch`` restores one batch (shared by both tasks),
``image`` runs ``task=image`` and ``summary`` writes the numbers; ``ddrm_exp.video`` runs
``task=video`` on the same parts, and ``ddrm_exp.runner`` dispatches between the two.
"""
