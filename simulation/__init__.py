"""The simulation harness: scripted annotators, oracles and the unattended loop driver.

A test and benchmark harness, not the product: no product module imports it. It
writes through the same services and HTTP API real users touch, and its
annotators are marked users whose judgments are stored as simulated.
"""
