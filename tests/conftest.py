"""Shared by every test folder: the helpers in tests/ (sipclient, proxyctl, kampxproc,
sipprun) are importable as top-level modules."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
