"""Tests of the Django adapter, against the minimal project in this directory."""
