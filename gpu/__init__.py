"""nicsim.gpu"""
