"""`python -m handler web`: a small web app on 127.0.0.1 where a person talks to the agent in a real
LiveKit room (the Talk page) and then reads the call records (the Calls pages). docs/web.md."""
