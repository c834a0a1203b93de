"""XMPP side of the interop suite: Prosody and ejabberd on loopback, scripted slixmpp
clients, and a stand-in XEP-0114 component that proves the servers route to a component.

Run with the Debian interpreter (python3-slixmpp is packaged for /usr/bin/python3):

    bash interop/xmpp/setup.sh && /usr/bin/python3 -m pytest interop/xmpp -v
"""
