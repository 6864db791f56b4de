"""nicsim.hw"""
