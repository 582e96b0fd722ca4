#!/usr/bin/env bash
# Baseline run_exec for benchmarks: what a driver without Airlock does.
exec bash "$1"
