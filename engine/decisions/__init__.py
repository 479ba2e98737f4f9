"""The decision log (what the server decided, with the features as served and the propensity
of every pick) and exploration: see :mod:`engine.decisions.log` and
:mod:`engine.decisions.explore`. (Nothing is imported here: ``engine.settings`` imports
:mod:`engine.decisions.config`, which must not pull in the models.)"""
