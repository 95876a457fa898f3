"""`python -m handler bench`: the presets side by side on the conversation corpus.

variants.py    what is compared: the four environments, the guide's "before", livekit's defaults,
               and any `NAME=ENV:key=value,...` given on the command line
conversations.py  one variant's run over the corpus, in a process of its own (its logging policy is
               the process's), conversations at once, provider servers in load mode
score.py       per conversation and per variant: TTFA, false interruptions per minute of agent
               speech, barge-ins caught, premature cut-offs, log lines per minute
render.py      the table, the guide's before/after table, the JSON document
plot.py        the TTFA distribution per variant, and false interruptions against TTFA
"""
